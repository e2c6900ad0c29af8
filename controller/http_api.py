"""The controller app's small HTTP endpoint (loopback only), one request per connection.

``GET /state`` (the view with next hops), ``GET /next_hops``, ``GET /flows`` (packet
counters of every IPv4 flow of every switch), ``POST /ground {"k": k, "sat": [s, o] | null}``
(a placed station's handover), ``POST /time {"t_s": x}`` (routes for constellation time
``x``), ``POST /expect {"links_down": [[[s, o], [s, o]], ...]}`` (a dynamics step's links:
route once the ports report exactly these down; ``within_s``: the longest wait for them).  Answers JSON; a bad request gets 400 with ``{"error": ...}`` and never takes the
controller down.
"""

from __future__ import annotations

import json
import time

MAX_LINE_BYTES = 8192            # request and header lines
MAX_BODY_BYTES = 32 << 20        # a POST body (an /expect of a 255x255 grid's links fits)


def handle(app, sock) -> None:
    """Serve one request on ``sock`` for ``app`` (the ManhattanRouting instance)."""
    try:
        fh = sock.makefile("rb")
        request = fh.readline(MAX_LINE_BYTES).decode("latin-1").split()
        length = 0
        while True:
            line = fh.readline(MAX_LINE_BYTES).decode("latin-1").strip()
            if not line:
                break
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ValueError(f"body of {length} bytes (at most {MAX_BODY_BYTES})")
        body = fh.read(length) if length else b""
        method, path = (request + ["", ""])[:2]
        code, payload = 200, None
        if method == "GET" and path == "/state":
            payload = app.view(next_hops=True)
        elif method == "GET" and path == "/next_hops":
            payload = {"next_hops": app.next_hops()}
        elif method == "GET" and path == "/flows":
            payload = app.collect_flow_stats()
        elif method == "POST" and path == "/ground":
            req = json.loads(body or b"{}")
            changed, fenced = app.stations.move(int(req["k"]), req.get("sat"))
            payload = {"k": int(req["k"]), "changed_flows": changed, "fenced": fenced,
                       "generation": app.generation}
        elif method == "POST" and path == "/expect":
            links = json.loads(body or b"{}")["links_down"]
            payload = {"expected": app.expect_links_down(links),
                       "within_s": round(max(0.0, app.expect_until - time.monotonic()), 3)}
        elif method == "POST" and path == "/time":
            t_s = float(json.loads(body or b"{}")["t_s"])
            payload = {"t_s": t_s, "changed_flows": app.set_time(t_s),
                       "generation": app.generation}
        else:
            code, payload = 404, {"error": f"no route {method} {path}"}
    except Exception as exc:  # a bad request must not take the controller down
        code, payload = 400, {"error": str(exc)}
    data = json.dumps(payload).encode()
    head = (f"HTTP/1.0 {code} {'OK' if code == 200 else 'Error'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    try:
        sock.sendall(head.encode() + data)
    finally:
        sock.close()
