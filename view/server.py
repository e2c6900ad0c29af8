"""The live view's web server: an aiohttp app in a thread of its own, fed by a
:class:`view.recorder.RunRecorder`.

    GET /                 the page (assets vendored in view/assets, nothing from the internet)
    GET /assets/NAME      its scripts, style and map data
    GET /api/topology     the static part (grid, satellites, ISLs, ground stations)
    GET /api/frame        the latest frame
    GET /api/events       server-sent events: ``topology`` once, then every new ``frame``
    GET /api/route?src=I&dst=J   the path (node indices) the network uses now from I to J

Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading

from aiohttp import web

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
ASSET_TYPES = {".js": "application/javascript", ".css": "text/css", ".json": "application/json",
               ".html": "text/html"}
KEEPALIVE_S = 15.0
QUEUE_MAX = 64  # frames buffered per client; a slower client skips to the newest


def _asset_path(name: str) -> str | None:
    path = os.path.realpath(os.path.join(ASSETS, name))
    if not path.startswith(os.path.realpath(ASSETS) + os.sep) or not os.path.isfile(path):
        return None
    return path


class ViewServer:
    """Serve ``recorder``'s frames on ``host:port`` (port 0: any free port, see ``url``)."""

    def __init__(self, recorder, host: str = "127.0.0.1", port: int = 0):
        self.recorder = recorder
        self.host, self.port = host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: set[asyncio.Queue] = set()
        self._thread = None
        self._runner = None
        self._ready = threading.Event()
        self.error: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # --- handlers -------------------------------------------------------------------------
    async def index(self, _req):
        return web.FileResponse(os.path.join(ASSETS, "index.html"),
                                headers={"Cache-Control": "no-store"})

    async def asset(self, req):
        path = _asset_path(req.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        ctype = ASSET_TYPES.get(os.path.splitext(path)[1], "application/octet-stream")
        return web.FileResponse(path, headers={"Content-Type": ctype})

    async def topology(self, _req):
        return web.json_response(self.recorder.topology)

    async def frame(self, _req):
        return web.Response(text=self.recorder.frame_text or "null", content_type="application/json")

    async def route(self, req):
        n = len(self.recorder.topology["sats"])
        try:
            a, b = int(req.query["src"]), int(req.query["dst"])
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text=f"src and dst: node indices 0..{n - 1}")
        loop = asyncio.get_running_loop()
        path, source = await loop.run_in_executor(None, self.recorder.route_path, a, b)
        return web.json_response({"path": path, "source": source})

    async def events(self, req):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await resp.prepare(req)
        queue: asyncio.Queue = asyncio.Queue(QUEUE_MAX)
        self.queues.add(queue)
        try:
            await resp.write(b"event: topology\ndata: "
                             + json.dumps(self.recorder.topology).encode() + b"\n\n")
            if self.recorder.frame_text:
                await resp.write(b"event: frame\ndata: " + self.recorder.frame_text.encode() + b"\n\n")
            while True:
                try:
                    text = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                while text is not None and not queue.empty():  # behind: the newest frame only
                    text = queue.get_nowait()
                if text is None:  # the server is stopping
                    break
                await resp.write(b"event: frame\ndata: " + text.encode() + b"\n\n")
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self.queues.discard(queue)
        return resp

    # --- fan-out from the recorder's thread -----------------------------------------------
    def publish(self, text: str) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._broadcast, text)

    def _broadcast(self, text: str) -> None:
        for q in list(self.queues):
            if q.full():
                q.get_nowait()
            q.put_nowait(text)

    # --- life cycle -------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/assets/{name:.+}", self.asset)
        app.router.add_get("/api/topology", self.topology)
        app.router.add_get("/api/frame", self.frame)
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/route", self.route)
        return app

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self._runner = web.AppRunner(self._app(), handle_signals=False, access_log=None,
                                          shutdown_timeout=1.0)
            self.loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self.error = f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _shutdown(self) -> None:
        for q in list(self.queues):  # end every event stream
            if q.full():
                q.get_nowait()
            q.put_nowait(None)
        await self._runner.cleanup()  # closes the listener and the connections
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def start(self) -> "ViewServer":
        """Listen; raises OSError (one line) when the address is taken."""
        self._thread = threading.Thread(target=self._serve, name="view-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self.error:
            raise OSError(self.error)
        self.recorder.subscribers.append(self.publish)
        return self

    def stop(self) -> None:
        if self.publish in self.recorder.subscribers:
            self.recorder.subscribers.remove(self.publish)
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
            self._thread.join(timeout=10)
        self._thread = None
