"""Dropping root: a node daemon needs it only to be started in a host's network namespace
and to bind; it serves as an unprivileged user afterwards.

:func:`drop_privileges` checks first that the user will still reach everything the daemon
uses (it owns the work directory, which is handed over; it must be able to traverse to and
read the data directory and the files the run's controller writes), and keeps root with
the reason when it would not, rather than break the node.
"""

from __future__ import annotations

import os
import pwd
import stat

R, W, X = 4, 2, 1


def _bits(st: os.stat_result, uid: int, gid: int) -> int:
    if st.st_uid == uid:
        return (st.st_mode >> 6) & 7
    if st.st_gid == gid:
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def unreachable(path: str, uid: int, gid: int, need: int) -> str | None:
    """Why ``uid``/``gid`` cannot reach ``path`` with ``need`` (R/W/X bits) on it, or None."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent):  # every ancestor up to / must be traversable
        try:
            if not _bits(os.stat(parent), uid, gid) & X:
                return f"{parent} is not traversable"
        except OSError as e:
            return f"{parent}: {e.strerror}"
        parent = os.path.dirname(parent)
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode) and need & R:
        need |= X
    if _bits(st, uid, gid) & need != need:
        return f"{path} is not accessible"
    return None


def drop_privileges(user: str, own=(), read=(), traverse=()) -> tuple[bool, str]:
    """Become ``user`` if running as root.  ``own``: directories handed over to the user
    (recursively); ``read``: paths it must still read; ``traverse``: directories it must
    pass through (files appear in them later).  Returns (dropped, what happened)."""
    if os.geteuid() != 0:
        return False, "not running as root"
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return False, f"no user {user!r}"
    uid, gid = pw.pw_uid, pw.pw_gid
    for path in own:
        os.makedirs(path, exist_ok=True)
        why = unreachable(os.path.dirname(os.path.abspath(path)), uid, gid, X)
        if why:
            return False, f"kept root: work directory {path}: {why}"
    for path, need in [(p, R) for p in read] + [(p, X) for p in traverse]:
        why = unreachable(path, uid, gid, need)
        if why:
            return False, f"kept root: {why}"
    for path in own:
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    return True, f"running as {user} (uid {uid})"
