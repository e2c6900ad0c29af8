"""The testbed key: the shared secret every frame's HMAC-SHA256 tag is made with.

A key is generated when a testbed (emulated or loopback) starts, written to its run
directory as ``testbed.key`` (64 hex digits and a newline, mode 0600), and handed to every
node daemon (``--key-file``) and to the ground CLI (``--key-file``, the environment
variable ``SPACECOMP_KEY_FILE``, or the ``testbed.key`` beside ``--addr-map``).  A key file
that others may read is refused, as ssh refuses such a private key.
"""

from __future__ import annotations

import os
import secrets
import stat

from node_app.protocol import MIN_KEY_BYTES

KEY_BYTES = 32
KEY_FILE_NAME = "testbed.key"
KEY_ENV = "SPACECOMP_KEY_FILE"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_key(path: str, key: bytes | None = None) -> bytes:
    """Write ``key`` (default: a new one) to ``path`` with mode 0600; returns the key."""
    key = key if key is not None else new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, key.hex().encode() + b"\n")
    finally:
        os.close(fd)
    return key


def load_key(path: str) -> bytes:
    """The key in ``path``; ValueError (one line) if missing, too open or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise ValueError(f"key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"key file {path}: not a regular file")
        if st.st_mode & 0o077:
            raise ValueError(f"key file {path}: readable by others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"key file {path}: expected hex digits") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key file {path}: key shorter than {MIN_KEY_BYTES} bytes")
    return key


def find_key_file(key_file: str | None, addr_map: str | None = None) -> str | None:
    """The key file a ground tool should use: the explicit one, else ``$SPACECOMP_KEY_FILE``,
    else ``testbed.key`` beside the address map (if it exists)."""
    if key_file:
        return key_file
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    if addr_map:
        beside = os.path.join(os.path.dirname(os.path.abspath(addr_map)), KEY_FILE_NAME)
        if os.path.exists(beside):
            return beside
    return None
