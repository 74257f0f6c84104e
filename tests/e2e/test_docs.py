"""docs/openapi.json and docs/api-reference.md are what `ipam openapi` generates now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).parents[2] / "docs"


def test_api_reference_is_up_to_date(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ipam", "openapi", "-o", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for name in ("openapi.json", "api-reference.md"):
        assert (tmp_path / name).read_text() == (DOCS / name).read_text(), (
            f"docs/{name} is stale: run `ipam openapi -o docs`")
