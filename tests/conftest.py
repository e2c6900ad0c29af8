"""Shared fixtures and the root-test gate."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``root`` build networks: skip them, with the reason, when not root."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (builds a Mininet/OVS network)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
