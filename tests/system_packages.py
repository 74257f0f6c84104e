"""Tests that need something from a system package (a program, the CNI plugins, root).

Outside CI a missing package skips the test with one line saying what to install. In CI
(``CI=true``; ``.ci/run`` installs these packages) it fails the test instead: there a skip
would hide a check that never ran.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason)


def command(name: str, package: str) -> str:
    """The path of the program ``name``, which Debian's ``package`` installs."""
    path = shutil.which(name)
    if path is None:
        missing(f"needs `{name}` (apt-get install -y {package})")
    return path
