"""The benchmark still runs end to end: ``python -m bench all --quick`` as CI would run it.

Quick mode proves the machinery works (service, fake API server, PostgreSQL, pgbench, every
section); its figures mean nothing, so nothing here asserts a duration or a target verdict.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("filter", "bind", "schedule", "poolsize", "restart", "reads", "scale")


def number(value: Any) -> float:
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    assert math.isfinite(value), value
    return float(value)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    done = subprocess.run([sys.executable, "-m", "bench", "all", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


@pytest.mark.timeout(300)
def test_every_section_reports_numeric_figures(result: dict[str, Any]) -> None:
    assert result["mode"] == "quick"
    assert set(result["sections"]) == set(SECTIONS)
    s = result["sections"]
    number(s["filter"]["figures"]["client_floor_healthz"]["p50"])
    for key, figures in s["filter"]["figures"].items():
        if key.startswith(("names_", "full_")):
            # The other-replica row measures filter under a writer; it has no parse floor.
            fields = ("p50", "p99", "rps") if key.endswith("_other_replica") else (
                "p50", "p99", "rps", "loads_p50_ms")
            for field in fields:
                number(figures[field])
    assert {k for k in s["filter"]["figures"] if k.startswith("full_")}, "no full-node run"
    for level in ("c1", "c8", "c32"):
        bind = s["bind"]["figures"][level]
        for value in (bind["service"]["rps"], bind["service"]["p99"], bind["pgbench"]["tps"],
                      bind["ratio"]):
            assert number(value) > 0
        assert bind["failures"] == 0
    for pool in ("/24", "/16", "/8", "IPv6 /64"):
        number(s["poolsize"]["figures"][pool]["rounds"]["mean"])
    number(s["restart"]["figures"]["ready_median_seconds"])
    number(s["restart"]["figures"]["rss_mb"])
    number(s["restart"]["figures"]["peak_rss_mb"])
    for read in (v for v in s["reads"]["figures"].values() if isinstance(v, dict)):
        assert number(read["p99"]) > 0 and read["n"] > 0
    scale = s["scale"]["figures"]
    number(scale["ready_seconds"])
    number(scale["filter_all_names"]["p99"])
    assert scale["all_distinct"] is True and scale["distinct_addresses"] == scale["pods"]
    for target in result["targets"]:
        number(target["value"])
        assert isinstance(target["pass"], bool)


@pytest.mark.timeout(300)
def test_scaled_down_scheduling_run_gives_every_pod_its_own_address(
        result: dict[str, Any]) -> None:
    run = result["sections"]["schedule"]["figures"]
    pods = run["pods"]
    assert pods > 0
    assert run["bound"] == pods
    assert run["annotated_addresses"] == pods
    assert run["distinct_addresses"] == pods
    assert run["db_allocated"] == run["db_distinct"] == pods
    assert run["all_distinct"] is True
    number(run["total_seconds"])
