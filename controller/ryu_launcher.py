"""Start ``ryu-manager`` (Ryu 4.34) under eventlet 0.33.3.

Run with the Ryu venv: ``.venv-ryu/bin/python controller/ryu_launcher.py APP [ryu-manager args]``.
Ryu 4.34's WSGI layer reads ``eventlet.wsgi.ALREADY_HANDLED``, which eventlet removed
(0.30+); defining it before Ryu is imported keeps ``ryu.app.wsgi`` importable.
"""

import os
import sys


def main() -> int:
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    import ryu  # noqa: F401  -- marks the framework for controller/app.py
    from ryu.cmd.manager import main as ryu_main

    sys.argv[0] = "ryu-manager"
    return ryu_main() or 0


if __name__ == "__main__":
    sys.exit(main())
