"""Enter a network namespace from one thread (Python 3.11 has no ``os.setns``): the
node daemons of a plane (node_app.multi) and the host configuration of the build.

A socket keeps the namespace it was created in, and a thread's namespace is its own:
a thread that calls :func:`enter` and then opens its sockets (an asyncio loop run in
that thread, and the executor threads it starts, which inherit it) talks through the
namespace's interfaces, while the rest of the process stays where it was.
"""

from __future__ import annotations

import ctypes
import os
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (e.g.
    ``/proc/PID/ns/net``); OSError when the kernel refuses (needs CAP_SYS_ADMIN)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def current_inode() -> int:
    """Inode of the calling thread's network namespace (equal inodes: same namespace)."""
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def inode_of(path: str) -> int:
    """Inode of the network namespace at ``path``."""
    return os.stat(path).st_ino


def run_in(path: str, fn, *args):
    """``fn(*args)`` in a new thread that has entered the namespace at ``path``; returns
    its result or raises its exception (the calling thread's namespace never changes)."""
    out: dict = {}

    def body():
        try:
            enter(path)
            out["value"] = fn(*args)
        except BaseException as e:  # handed to the caller
            out["error"] = e
    t = threading.Thread(target=body, name="netns")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")
