"""A feed cancelled because its job ended leaves no retained copy on disk, and a role's
directory is removed again once a producer thread still running at release has ended."""

import asyncio
import io
import os
import threading
from types import SimpleNamespace

import pytest

from node_app.replay import RetainingFeed
from node_app.role_base import Role
from node_app.streams import Cancelled, Feed


def _in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_retaining_feed_cancelled_before_a_file_writes_no_copy(tmp_path):
    async def main():
        feed = RetainingFeed(asyncio.get_running_loop())
        feed.cancel()
        path = tmp_path / "sent-0-a.bin"
        t, out = _in_thread(lambda: feed.file("a.bin", io.BytesIO(b"x" * 1000), str(path)))
        while t.is_alive():
            await asyncio.sleep(0.01)
        assert isinstance(out.get("error"), Cancelled)
        assert not path.exists()
    asyncio.run(main())


@pytest.mark.parametrize("cls", [Feed, RetainingFeed])
def test_a_feed_cut_off_mid_file_removes_its_partial_copy(tmp_path, cls):
    async def main():
        feed = cls(asyncio.get_running_loop(), depth=1) if cls is Feed else cls(
            asyncio.get_running_loop())
        path = tmp_path / "sent-0-a.bin"
        data = io.BytesIO(os.urandom(64 * 1024))
        t, out = _in_thread(lambda: feed.file("a.bin", data, str(path), segment=1024))
        first = await feed.queue.get()          # the file has begun; the consumer stops here
        assert first[0] == "begin"
        await asyncio.sleep(0.05)
        feed.cancel()
        while t.is_alive():
            await asyncio.sleep(0.01)
            feed.cancel()                       # unblock a put that was waiting
        assert isinstance(out.get("error"), Cancelled)
        assert not path.exists()
    asyncio.run(main())


def test_finish_removes_the_directory_again_after_a_late_producer(tmp_path):
    """The race behind an abandoned job's leftover file: the role's directory is removed
    while its producer thread is still running, and the thread then creates a file."""
    async def main():
        loop = asyncio.get_running_loop()
        role = Role.__new__(Role)
        role.dir = str(tmp_path / "job-1-collector")
        os.makedirs(role.dir)
        role.feeds, role.closed = [], asyncio.Event()
        role.job_id, role.role = 1, "collector"
        role.node = SimpleNamespace(drop_role=lambda *a: None)
        feed = role.track(Feed(loop))
        go = threading.Event()

        def late_writer():
            go.wait(5)
            with open(os.path.join(role.dir, "sent-0-late.bin"), "wb") as f:
                f.write(b"late")
        feed.worker = loop.run_in_executor(None, late_writer)
        role.finish()               # removes the directory while the thread still runs
        os.makedirs(role.dir, exist_ok=True)   # ... which it had already re-entered
        go.set()
        await feed.worker
        await asyncio.sleep(0.05)   # the done callback runs on the loop
        assert not os.path.exists(role.dir)
    asyncio.run(main())
