"""Debian's chromium driven by Playwright (tests, screenshots); nothing is downloaded.

    python3 -m view.browser URL_OR_HTML out.png [--wait 2]   # a screenshot of the view

Playwright's own browser download (``playwright install``) is never used: the browser is
``/usr/bin/chromium`` from Debian (setup.sh), started headless without sandbox, GPU,
background networking, component updates or sync.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def chromium_path() -> str | None:
    """The Debian chromium binary, or None when it is not installed."""
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


def launch(playwright):
    """A headless Debian chromium (``playwright``: a started sync_playwright())."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium is not installed (setup.sh installs Debian's chromium)")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)


def watch_errors(page) -> list[str]:
    """Collect the page's console errors and uncaught exceptions into the returned list."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


@contextlib.contextmanager
def open_page(url: str, width: int = 1400, height: int = 800):
    """``with open_page(url) as (page, errors):`` a page of a headless Debian chromium
    loaded from ``url``; ``errors`` collects its console errors (closed afterwards)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors = watch_errors(page)
            page.goto(url)
            yield page, errors
        finally:
            browser.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m view.browser")
    p.add_argument("target", help="http(s) URL or an HTML file")
    p.add_argument("png")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to let the page draw")
    p.add_argument("--size", default="1500x800", help="viewport WxH")
    a = p.parse_args(argv)
    url = a.target if "://" in a.target else "file://" + os.path.abspath(a.target)
    w, h = (int(v) for v in a.size.lower().split("x"))
    with open_page(url, w, h) as (page, errors):
        time.sleep(a.wait)
        page.screenshot(path=a.png)
    for e in errors:
        print(f"console error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
