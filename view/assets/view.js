/* SpaceCoMP constellation view: a world map and the torus grid of a running (live) or
 * recorded (replay) testbed.  Data: one topology message, then frames (view/model.py).
 * Rendering keeps one SVG element per satellite and per ISL and only touches the
 * attributes that changed, so a frame of a 20x20 grid costs a few milliseconds. */
(function () {
  "use strict";
  const SV = {};
  window.SpaceView = SV;
  const stats = { frames: 0, lastUpdateMs: 0, maxUpdateMs: 0, sumUpdateMs: 0, errors: 0 };
  SV.stats = stats;
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";

  let T = null;            // topology
  let F = null;            // current frame
  let mapView = null, gridView = null;
  let prevState = "", prevRate = [];
  let colour = null, domain = [0, 0];
  let selJob = null, jobsKey = "";
  let routeSel = [], routePath = null, routeSource = null;
  let routeProvider = null; // (a, b, frame) -> Promise<{path, source}>
  let idxOf = null;

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  const satName = (i) => "[" + T.sats[i][0] + ", " + T.sats[i][1] + "]";
  const fmtRate = (m) => m >= 1000 ? (m / 1000).toFixed(2) + " Gbit/s" : m >= 1 ? m.toFixed(1) + " Mbit/s" : (m * 1000).toFixed(0) + " kbit/s";
  const fmtBytes = (b) => b >= 1e9 ? (b / 1e9).toFixed(2) + " GB" : b >= 1e6 ? (b / 1e6).toFixed(2) + " MB" : b >= 1e3 ? (b / 1e3).toFixed(1) + " kB" : b + " B";
  function fmtTime(t) {
    const s = Math.abs(t), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
    return (t < 0 ? "-" : "") + (h ? h + " h " : "") + (h || m ? m + " min " : "") + x.toFixed(1) + " s";
  }

  // ---- tooltip ---------------------------------------------------------------------------
  function tip(evt, html) {
    const t = $("tip");
    if (!html) { t.hidden = true; return; }
    t.innerHTML = html; t.hidden = false;
    t.style.left = (evt.clientX + 12) + "px"; t.style.top = (evt.clientY + 12) + "px";
  }
  function linkTip(i) {
    const l = T.links[i], c = F ? F.state[i] : "u";
    return satName(l[0]) + " – " + satName(l[1]) + " · " + (l[2] === "in" ? "in-plane" : "cross-plane") +
      "<br>" + (F ? fmtRate(F.rate_mbps[i]) : "") + " · " + ({ u: "up", l: "lossy", d: "down" })[c];
  }
  function satTip(i) {
    let s = "satellite " + satName(i) + " · node " + (i + 1);
    if (F) s += "<br>lat " + F.lat[i].toFixed(1) + "°, lon " + F.lon[i].toFixed(1) + "°";
    return s;
  }

  // ---- the two panels ----------------------------------------------------------------------
  function makePanel(svg, kind) {
    svg.innerHTML = "";
    const r = svg.getBoundingClientRect();
    const w = Math.max(200, r.width), h = Math.max(150, r.height);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const P = { svg, kind, w, h, links: [], sats: [], x: new Float64Array(T.sats.length), y: new Float64Array(T.sats.length) };
    if (kind === "map") {
      P.proj = d3.geoNaturalEarth1().fitExtent([[4, 4], [w - 4, h - 4]], { type: "Sphere" });
      const path = d3.geoPath(P.proj);
      el("path", { d: path({ type: "Sphere" }), class: "sphere" }, svg);
      el("path", { d: path(d3.geoGraticule10()), class: "graticule" }, svg);
      if (SV.land) el("path", { d: path(topojson.feature(SV.land, SV.land.objects.land)), class: "land" }, svg);
    } else {
      const [N, M] = T.grid, pad = 26;
      P.dx = (w - 2 * pad) / Math.max(1, N - 1 + 0.0001); P.dy = (h - 2 * pad) / Math.max(1, M - 1 + 0.0001);
      P.stub = Math.min(P.dx, P.dy) * 0.35;
      for (let i = 0; i < T.sats.length; i++) {
        P.x[i] = pad + (T.sats[i][1] - 1) * P.dx; P.y[i] = pad + (T.sats[i][0] - 1) * P.dy;
      }
      const ax = el("g", { class: "axis" }, svg);
      const step = Math.ceil(N / 20), stepM = Math.ceil(M / 20);
      for (let o = 1; o <= N; o += step) el("text", { x: pad + (o - 1) * P.dx, y: 10, "text-anchor": "middle" }, ax).textContent = o;
      for (let s = 1; s <= M; s += stepM) el("text", { x: 8, y: pad + (s - 1) * P.dy + 3, "text-anchor": "middle" }, ax).textContent = s;
    }
    P.gLinks = el("g", {}, svg);
    P.gBytes = el("g", {}, svg);
    P.gFlows = el("g", {}, svg);
    P.gRoute = el("g", {}, svg);
    P.gGround = el("g", {}, svg);
    P.gSats = el("g", {}, svg);
    P.gRoles = el("g", {}, svg);
    const rSat = Math.max(1.8, Math.min(5, 160 / Math.sqrt(T.sats.length) / (kind === "map" ? 3.2 : 2.2)));
    P.rSat = rSat;
    T.links.forEach((l, i) => {
      const e = el(kind === "map" ? "line" : "path", { class: "link", "data-link": i, "data-state": "u" }, P.gLinks);
      e.addEventListener("mousemove", (ev) => tip(ev, linkTip(i)));
      e.addEventListener("mouseleave", (ev) => tip(ev, null));
      P.links.push(e);
    });
    T.sats.forEach((s, i) => {
      const c = el("circle", { class: "sat", r: rSat, "data-sat": i }, P.gSats);
      c.addEventListener("mousemove", (ev) => tip(ev, satTip(i)));
      c.addEventListener("mouseleave", (ev) => tip(ev, null));
      c.addEventListener("click", () => pickSat(i));
      P.sats.push(c);
    });
    if (kind === "grid") {
      P.sats.forEach((c, i) => { c.setAttribute("cx", P.x[i]); c.setAttribute("cy", P.y[i]); });
      T.links.forEach((l, i) => P.links[i].setAttribute("d", gridLinkPath(P, l)));
    }
    return P;
  }

  function gridLinkPath(P, l) {
    const [a, b, kind] = l, xa = P.x[a], ya = P.y[a], xb = P.x[b], yb = P.y[b];
    const wraps = Math.abs(xa - xb) > P.dx * 1.5 || Math.abs(ya - yb) > P.dy * 1.5;
    if (!wraps) return "M" + xa + "," + ya + "L" + xb + "," + yb;
    if (kind === "in") return "M" + xa + "," + ya + "L" + xa + "," + (ya + P.stub) + "M" + xb + "," + yb + "L" + xb + "," + (yb - P.stub);
    return "M" + xa + "," + ya + "L" + (xa + P.stub) + "," + ya + "M" + xb + "," + yb + "L" + (xb - P.stub) + "," + yb;
  }

  function placeMap(P, f) {
    for (let i = 0; i < T.sats.length; i++) {
      const p = P.proj([f.lon[i], f.lat[i]]);
      P.x[i] = p[0]; P.y[i] = p[1];
      const c = P.sats[i];
      c.setAttribute("cx", p[0].toFixed(1)); c.setAttribute("cy", p[1].toFixed(1));
    }
    const half = P.w / 2;
    T.links.forEach((l, i) => {
      const e = P.links[i], a = l[0], b = l[1];
      if (Math.abs(P.x[a] - P.x[b]) > half) { e.setAttribute("visibility", "hidden"); return; }
      e.removeAttribute("visibility");
      e.setAttribute("x1", P.x[a].toFixed(1)); e.setAttribute("y1", P.y[a].toFixed(1));
      e.setAttribute("x2", P.x[b].toFixed(1)); e.setAttribute("y2", P.y[b].toFixed(1));
    });
  }

  // ---- colours and legend ------------------------------------------------------------------
  const ramp = (t) => d3.interpolateViridis(0.25 + 0.75 * t); // bright enough on the dark map
  function updateDomain(rates) {
    let lo = Infinity, hi = 0;
    for (const r of rates) if (r > 0) { if (r < lo) lo = r; if (r > hi) hi = r; }
    if (!(hi > 0)) { lo = 1; hi = 10; }
    if (hi / lo < 1.05) { lo = lo / 1.5; hi = hi * 1.5; }
    if (lo === domain[0] && hi === domain[1]) return false;
    domain = [lo, hi];
    colour = d3.scaleSequentialLog((t) => ramp(t)).domain(domain);
    drawLegend();
    return true;
  }
  function drawLegend() {
    const svg = $("legend");
    svg.innerHTML = "";
    const w = svg.getBoundingClientRect().width || 240;
    const defs = el("defs", {}, svg), g = el("linearGradient", { id: "lg" }, defs);
    for (let k = 0; k <= 10; k++) el("stop", { offset: k * 10 + "%", "stop-color": ramp(k / 10) }, g);
    el("rect", { x: 4, y: 2, width: w - 8, height: 12, fill: "url(#lg)", rx: 2 }, svg);
    const lo = el("text", { x: 4, y: 30, fill: "#8592ad", "font-size": 10 }, svg); lo.textContent = fmtRate(domain[0]);
    const hi = el("text", { x: w - 4, y: 30, fill: "#8592ad", "font-size": 10, "text-anchor": "end" }, svg); hi.textContent = fmtRate(domain[1]);
  }

  // ---- a frame -----------------------------------------------------------------------------
  function applyFrame(f) {
    const t0 = performance.now();
    F = f;
    placeMap(mapView, f);
    const all = updateDomain(f.rate_mbps) || !prevState;
    let up = 0, lossy = 0, down = 0;
    for (let i = 0; i < T.links.length; i++) {
      const c = f.state[i], r = f.rate_mbps[i];
      if (c === "d") down++; else if (c === "l") lossy++; else up++;
      if (!all && c === prevState[i] && r === prevRate[i]) continue;
      const cls = "link" + (c === "d" ? " down" : c === "l" ? " lossy" : "");
      const stroke = c === "l" ? "var(--lossy)" : colour(Math.max(r, domain[0]));
      for (const P of [mapView, gridView]) {
        const e = P.links[i];
        e.setAttribute("class", cls); e.setAttribute("data-state", c); e.style.stroke = stroke;
      }
    }
    prevState = f.state; prevRate = f.rate_mbps;
    $("t-label").textContent = fmtTime(f.t_s);
    $("up-label").textContent = up; $("lossy-label").textContent = lossy; $("down-label").textContent = down;
    const running = (f.jobs || []).filter((j) => j.status === "running").length;
    $("jobs-label").textContent = (f.jobs || []).length + (running ? " (" + running + " running)" : "");
    drawGround(f);
    const key = JSON.stringify(f.jobs || []);
    if (key !== jobsKey) { jobsKey = key; drawJobs(f.jobs || []); }
    else drawJobOverlay(f.jobs || [], true);
    if (routeSel.length === 2) refreshRoute();
    const ms = performance.now() - t0;
    stats.frames++; stats.lastUpdateMs = ms; stats.sumUpdateMs += ms;
    if (ms > stats.maxUpdateMs) stats.maxUpdateMs = ms;
    document.body.dataset.frames = stats.frames;
  }

  function drawGround(f) {
    for (const P of [mapView, gridView]) {
      P.gGround.innerHTML = "";
      for (const g of T.ground) {
        let gx, gy;
        const sx = P.x[g.los], sy = P.y[g.los];
        if (P.kind === "map" && g.lat !== null && g.lon !== null) {
          const p = P.proj([g.lon, g.lat]); gx = p[0]; gy = p[1];
        } else { gx = sx - 12; gy = sy + 14; }
        if (P.kind !== "map" || Math.abs(gx - sx) < P.w / 2) el("line", { x1: gx, y1: gy, x2: sx, y2: sy, class: "gsline" }, P.gGround);
        el("path", { d: "M" + gx + "," + (gy - 6) + "L" + (gx + 5.5) + "," + (gy + 4) + "L" + (gx - 5.5) + "," + (gy + 4) + "Z", class: "gs" }, P.gGround);
        el("text", { x: gx + 7, y: gy + 4, class: "gslabel" }, P.gGround).textContent = g.name;
      }
    }
  }

  // ---- jobs ----------------------------------------------------------------------------------
  function currentJob(jobs) {
    if (!jobs.length) return null;
    const j = jobs.find((x) => x.job === selJob);
    if (j) return j;
    const run = jobs.filter((x) => x.status === "running");
    return (run.length ? run : jobs)[(run.length ? run : jobs).length - 1];
  }
  function bar(label, done, total, cls) {
    const pct = total ? 100 * done / total : 0;
    return '<div class="bar"><span>' + label + '</span><div class="tr"><div class="fl ' + cls + '" style="width:' + pct + '%"></div></div><span>' + done + "/" + total + "</span></div>";
  }
  function drawJobs(jobs) {
    const box = $("jobs");
    if (!jobs.length) { box.className = "muted"; box.textContent = "no job yet"; drawJobOverlay(jobs); return; }
    box.className = "";
    const cur = currentJob(jobs);
    box.innerHTML = jobs.slice().reverse().map((j) => {
      const dur = ((j.t_end || (F ? F.wall_s : j.t_submit)) - j.t_submit);
      return '<div class="job' + (cur && j.job === cur.job ? " sel" : "") + '" data-job="' + j.job + '">' +
        '<div class="hd"><span>job ' + j.job + '</span><span class="st ' + j.status + '">' + j.status + "</span></div>" +
        bar("collectors", j.done.collector.length, j.collectors.length, "coll") +
        bar("mappers", j.done.mapper.length, j.mappers.length, "map") +
        bar("reducer", j.done.reducer.length, j.reducer === null ? 0 : 1, "red") +
        '<div class="by">collect ' + fmtBytes(j.bytes.collect) + " · map " + fmtBytes(j.bytes.map) +
        (dur >= 0 ? " · " + dur.toFixed(1) + " s" : "") + (j.error ? '<br><span class="bad">' + j.error + "</span>" : "") + "</div></div>";
    }).join("");
    box.querySelectorAll(".job").forEach((d) => d.addEventListener("click", () => {
      selJob = +d.dataset.job; jobsKey = ""; if (F) applyFrame(F);
    }));
    drawJobOverlay(jobs);
  }
  function marker(P, i, cls, done) {
    const x = P.x[i], y = P.y[i], r = P.rSat + 3.5;
    const c = "role " + cls + (done ? " done" : "");
    if (cls === "coll") el("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, class: c, "fill-opacity": .35 }, P.gRoles);
    else if (cls === "map") el("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, class: c, transform: "rotate(45 " + x + " " + y + ")", "fill-opacity": .35 }, P.gRoles);
    else el("circle", { cx: x, cy: y, r: r + 2, class: c, "fill-opacity": .35 }, P.gRoles);
  }
  function flow(P, a, b, cls) {
    const xa = P.x[a], ya = P.y[a], xb = P.x[b], yb = P.y[b];
    if (a === b || (P.kind === "map" && Math.abs(xa - xb) > P.w / 2)) return;
    const mx = (xa + xb) / 2 - (yb - ya) * 0.2, my = (ya + yb) / 2 + (xb - xa) * 0.2;
    el("path", { d: "M" + xa + "," + ya + "Q" + mx + "," + my + " " + xb + "," + yb, class: "flow " + cls }, P.gFlows);
  }
  function drawJobOverlay(jobs, positionsOnly) {
    const j = currentJob(jobs);
    for (const P of [mapView, gridView]) {
      if (positionsOnly && P.kind === "grid") continue; // grid positions never move
      P.gRoles.innerHTML = ""; P.gFlows.innerHTML = ""; P.gBytes.innerHTML = "";
      if (!j) continue;
      const done = (k, i) => j.done[k].indexOf(i) >= 0;
      for (const [c, m] of j.collectors) { marker(P, c, "coll", done("collector", c)); if (m !== null) flow(P, c, m, "collect"); }
      for (const [m, r] of j.mappers) { marker(P, m, "map", done("mapper", m)); if (r !== null) flow(P, m, r, "map"); }
      if (j.reducer !== null) {
        marker(P, j.reducer, "red", done("reducer", j.reducer));
        if (j.coordinator !== null) flow(P, j.reducer, j.coordinator, "reduce");
      }
      if (P.kind === "grid" && j.link_bytes.length) {
        const max = Math.max(...j.link_bytes.map((x) => x[1]));
        for (const [k, b] of j.link_bytes) {
          const e = el("path", { d: P.links[k].getAttribute("d"), class: "jobbytes", "stroke-width": 3 + 9 * Math.sqrt(b / max) }, P.gBytes);
          e.dataset.bytes = b;
        }
      }
    }
  }

  // ---- routes of a selected pair ------------------------------------------------------------
  function pickSat(i) {
    if (routeSel.length >= 2) routeSel = [];
    routeSel.push(i);
    for (const P of [mapView, gridView]) P.sats.forEach((c, k) => c.classList.toggle("sel", routeSel.indexOf(k) >= 0));
    if (routeSel.length === 2) refreshRoute(true);
    else { routePath = null; drawRoute(); $("route-info").textContent = "source " + satName(i) + ": click a destination"; }
  }
  let routeBusy = false;
  function refreshRoute(force) {
    if (!routeProvider || routeBusy) return;
    const [a, b] = routeSel;
    routeBusy = true;
    routeProvider(a, b, F).then((res) => {
      routeBusy = false;
      if (routeSel[0] !== a || routeSel[1] !== b) return;
      routePath = res ? res.path : null; routeSource = res ? res.source : null;
      drawRoute();
    }).catch(() => { routeBusy = false; });
  }
  function drawRoute() {
    for (const P of [mapView, gridView]) {
      P.gRoute.innerHTML = "";
      if (!routePath) continue;
      let d = "";
      for (let k = 1; k < routePath.length; k++) {
        const a = routePath[k - 1], b = routePath[k];
        const li = linkBetween(a, b);
        if (P.kind === "grid" && li !== null) d += P.links[li].getAttribute("d");
        else if (!(P.kind === "map" && Math.abs(P.x[a] - P.x[b]) > P.w / 2)) d += "M" + P.x[a] + "," + P.y[a] + "L" + P.x[b] + "," + P.y[b];
      }
      el("path", { d, class: "route" }, P.gRoute);
    }
    const info = $("route-info");
    if (routeSel.length < 2) return;
    info.className = "";
    info.innerHTML = routePath ? satName(routeSel[0]) + " → " + satName(routeSel[1]) + ": <b>" + (routePath.length - 1) + " hops</b> via " +
      routePath.map(satName).join(" ") + '<br><span class="muted">' + (routeSource || "") + "</span>"
      : satName(routeSel[0]) + " → " + satName(routeSel[1]) + ': <span class="bad">no route</span>';
  }
  function linkBetween(a, b) {
    if (!idxOf) {
      idxOf = new Map();
      T.links.forEach((l, i) => { idxOf.set(l[0] + "," + l[1], i); idxOf.set(l[1] + "," + l[0], i); });
    }
    const v = idxOf.get(a + "," + b);
    return v === undefined ? null : v;
  }
  function followTable(table, a, b) {
    const path = [a];
    while (path[path.length - 1] !== b) {
      const n = table[path[path.length - 1]][b];
      if (n < 0 || path.indexOf(n) >= 0 || path.length > table.length) return null;
      path.push(n);
    }
    return path;
  }

  // ---- set-up --------------------------------------------------------------------------------
  function setTopology(t) {
    T = t; idxOf = null; prevState = ""; jobsKey = ""; domain = [0, 0];
    $("grid-label").textContent = t.grid[0] + " planes × " + t.grid[1] + " satellites" + (t.title ? " · " + t.title : "");
    mapView = makePanel($("map"), "map");
    gridView = makePanel($("grid"), "grid");
    document.body.dataset.sats = t.sats.length;
    document.body.dataset.links = t.links.length;
  }
  function relayout() { if (T) { setTopology(T); if (F) applyFrame(F); if (routePath) drawRoute(); } }
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(relayout, 150); });

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { stats.errors++; console.error("view: " + e); }
    };
  }

  SV.live = function () {
    const mode = $("mode-label");
    d3.json("/assets/vendor/land-110m.json").then((land) => { SV.land = land; relayout(); }).catch(() => {});
    routeProvider = (a, b) => fetch("/api/route?src=" + a + "&dst=" + b).then((r) => r.json());
    const es = new EventSource("/api/events");
    es.addEventListener("topology", safe((ev) => { setTopology(JSON.parse(ev.data)); mode.textContent = "live"; mode.className = "mode live"; }));
    es.addEventListener("frame", safe((ev) => { const f = JSON.parse(ev.data); if (f && T) applyFrame(f); }));
    es.onerror = () => { mode.textContent = "disconnected (run ended?)"; mode.className = "mode"; };
    SV.source = es;
  };

  SV.replay = function (data) {
    SV.land = data.land || null;
    document.body.classList.add("replay");
    const mode = $("mode-label");
    mode.textContent = "replay · " + data.frames.length + " frames"; mode.className = "mode replay";
    setTopology(data.topology);
    const frames = data.frames;
    routeProvider = (a, b, f) => {
      const k = f && f.routes !== undefined ? f.routes : null;
      const table = k === null || !data.routes ? null : data.routes[k];
      return Promise.resolve(table ? { path: followTable(table, a, b), source: "routing rule on this frame's link state" } : null);
    };
    const footer = $("timeline"), scrub = $("scrub"), play = $("play"), label = $("frame-label");
    footer.hidden = false;
    scrub.max = Math.max(0, frames.length - 1);
    let k = 0, timer = null;
    function show(i) {
      k = Math.max(0, Math.min(frames.length - 1, i)); scrub.value = k;
      applyFrame(frames[k]);
      const t = frames[k].wall_s - frames[0].wall_s;
      label.textContent = "frame " + (k + 1) + "/" + frames.length + " · +" + t.toFixed(1) + " s";
    }
    function stop() { clearTimeout(timer); timer = null; play.textContent = "▶"; }
    function tick() {
      if (k >= frames.length - 1) { stop(); return; }
      const dt = (frames[k + 1].wall_s - frames[k].wall_s) * 1000 / +$("speed").value;
      timer = setTimeout(() => { show(k + 1); tick(); }, Math.max(15, Math.min(dt, 2000)));
    }
    play.addEventListener("click", () => { if (timer) stop(); else { if (k >= frames.length - 1) show(0); play.textContent = "❚❚"; tick(); } });
    scrub.addEventListener("input", () => { stop(); show(+scrub.value); });
    SV.show = show;
    if (frames.length) show(frames.length - 1);
  };
})();
