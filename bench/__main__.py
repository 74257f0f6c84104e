"""``python -m bench SECTION [--quick] [--json FILE]``; SECTION: all or one of ``SECTIONS``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench import (
    bind_throughput,
    filter_latency,
    operator_reads,
    pool_size,
    restart,
    scale_up,
    schedule_run,
)
from bench.lab import Lab
from bench.report import Section, render, summary

SECTIONS: dict[str, Callable[[Lab], Awaitable[Section]]] = {
    "filter": filter_latency.run,
    "bind": bind_throughput.run,
    "schedule": schedule_run.run,
    "poolsize": pool_size.run,
    "restart": restart.run,
    "reads": operator_reads.run,
    "scale": scale_up.run,
}


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg()}


async def main_async(names: list[str], quick: bool) -> dict[str, Any]:
    """Run the sections in order; print each table as it completes; return the document."""
    lab = Lab(quick)
    started = time.perf_counter()
    sections: list[Section] = []
    doc: dict[str, Any] = {"mode": "quick" if quick else "full", "machine": machine(),
                           "sections": {}}
    # The load generator holds the cluster's objects (5,000 nodes, thousands of pods): a
    # collection pass over them mid-measurement would be charged to the service. Collect
    # explicitly between sections instead.
    gc.disable()
    try:
        doc["postgres"] = {"where": lab.pg.kind, **await lab.pg.settings(),
                           "pgbench": lab.pg.pgbench}
        print(f"# ipam benchmark ({doc['mode']}): {doc['machine']['nproc']} CPUs, "
              f"{doc['machine']['memory_gb']} GB, PostgreSQL {doc['postgres']}\n", flush=True)
        for name in names:
            gc.collect()
            t0 = time.perf_counter()
            section = await SECTIONS[name](lab)
            section.figures["section_seconds"] = round(time.perf_counter() - t0, 2)
            sections.append(section)
            doc["sections"][name] = section.to_dict()
            print(render(section), flush=True)
    finally:
        lab.close()
    doc["targets"] = [{"section": s.name, **t.to_dict()} for s in sections for t in s.targets]
    doc["seconds"] = round(time.perf_counter() - started, 1)
    # Other work on the machine skews figures; the load average says whether there was any.
    doc["machine"]["loadavg_at_end"] = os.getloadavg()
    print(summary(sections))
    print(f"total {doc['seconds']} s")
    return doc


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["real-scheduler"]:
        # Its own command (a real control plane, minutes per size): not part of ``all``.
        from bench import real_scheduler

        return real_scheduler.main((sys.argv[1:] if argv is None else argv)[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("section", choices=["all", *SECTIONS, "real-scheduler"],
                        help="which section to run (all: every one, in order; "
                             "real-scheduler: its own command, see real-scheduler --help)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (< 60 s): proves the benchmark works, figures mean "
                             "nothing")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results here")
    parser.add_argument("--ipam-src", type=Path, metavar="DIR",
                        help="benchmark the ipam package found in DIR instead of this tree's "
                             "(A/B a proposed change without touching the tree)")
    args = parser.parse_args(argv)
    if args.ipam_src is not None:
        src = str(args.ipam_src.resolve())
        print(f"# ipam from {src}")
        sys.path.insert(0, src)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (src, os.environ.get("PYTHONPATH")) if p)
    names = list(SECTIONS) if args.section == "all" else [args.section]
    try:
        import uvloop
    except ImportError:
        doc = asyncio.run(main_async(names, args.quick))
    else:  # the service runs on uvloop too; the load generator should not be the slow side
        doc = uvloop.run(main_async(names, args.quick))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
