"""Benchmark the start-up of the ``genievm`` command: how long a command that does no work takes.

Each command (default ``genievm --help``, ``genievm --version`` where it exists, and
``genievm plugins --help``) runs ``--runs`` times as a fresh process; the wall time
of each run is measured and the minimum and median are printed beside the target
(0.3 s for ``--help`` and ``--version``). Then ``python -X importtime`` shows the
modules that cost the most, cumulative, for ``import genievm_core.cli`` and for
``genievm --help`` itself, so a regression names the import that caused it.

    .venv/bin/python benchmarks/startup.py [--runs 10] [--top 15] [--json]

The figures depend on the machine's load; docs/performance.md has the ones measured
before and after the start-up work (issue 21), on this project's development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 0.3  # seconds, for --help and --version
COMMANDS: list[list[str]] = [["--help"], ["--version"], ["plugins", "--help"]]


def genievm_exe() -> str:
    exe = Path(sys.executable).with_name("genievm")
    return str(exe) if exe.exists() else "genievm"


def time_runs(argv: list[str], runs: int) -> list[float] | None:
    """Wall seconds of each run; None when the command fails (``--version`` on an older core)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            return None
    return times


def import_breakdown(argv: list[str], top: int) -> list[tuple[int, str]]:
    """The ``top`` modules by cumulative import time (µs) when running ``argv`` under ``-X importtime``."""
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=15, help="modules shown in each import-time breakdown")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    exe = genievm_exe()
    results: dict[str, dict[str, float] | None] = {}
    for command in COMMANDS:
        times = time_runs([exe, *command], args.runs)
        results[" ".join(["genievm", *command])] = (
            None if times is None else {"min": min(times), "median": statistics.median(times)}
        )
    breakdowns = {
        "import genievm_core.cli": import_breakdown([sys.executable, "-c", "import genievm_core.cli"], args.top),
        "genievm --help": import_breakdown([sys.executable, "-m", "genievm_core", "--help"], args.top),
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "target": TARGET, "commands": results, "imports": breakdowns}, indent=2))
        return 0
    print(f"{'command':<24} {'min s':>7} {'median s':>9}  target ({args.runs} runs each)")
    for name, figures in results.items():
        if figures is None:
            print(f"{name:<24} {'(fails: not in this version)':>18}")
            continue
        target = f"<= {TARGET}" if name.endswith(("--help", "--version")) and "plugins" not in name else "-"
        print(f"{name:<24} {figures['min']:7.3f} {figures['median']:9.3f}  {target}")
    for title, rows in breakdowns.items():
        print(f"\nimport time, cumulative, top {args.top}: {title}")
        for cumulative, name in rows:
            print(f"  {cumulative / 1000:8.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
