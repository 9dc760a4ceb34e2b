"""Run every benchmark, then print one table of their headline figures against their targets.

Usage: ``.venv/bin/python benchmarks/run.py [NAME ...]`` (``make bench`` runs them all;
about 30 minutes on the shared 2-core machine). Each script runs as a process of its own,
in the order below, its output streamed as it comes; the ``HEADLINE`` lines it prints
(:mod:`_headline`) are collected, and the table at the end lists each: benchmark, what is
measured, the figure, the target, and whether it holds (``yes``, ``NO``, or ``-`` for a
figure without a target). A script that fails is a row too. Exit status 1 when a script
failed; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _headline import PREFIX

HERE = Path(__file__).resolve().parent
# the quick and self-contained first; a script not listed here runs after these
ORDER = ["capacity", "spawn", "advertise", "locality", "launch", "sim_watch", "load"]


def scripts() -> list[str]:
    """Every benchmark in this folder (not the helpers ``_*.py``, not this runner)."""
    found = {p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_")} - {"run"}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def run(name: str) -> tuple[list[dict[str, object]], int, float]:
    """Run ``benchmarks/<name>.py``; its headlines, exit status and seconds."""
    started = time.perf_counter()
    print(f"\n== benchmarks/{name}.py (load average {os.getloadavg()[0]:.1f})", flush=True)
    proc = subprocess.Popen([sys.executable, str(HERE / f"{name}.py")], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert proc.stdout is not None
    rows = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith(PREFIX):
            rows.append(json.loads(line[len(PREFIX) :]))
    return rows, proc.wait(), time.perf_counter() - started


def table(rows: list[dict[str, object]]) -> str:
    shown = {None: "-", True: "yes", False: "NO"}
    lines = [["benchmark", "measure", "figure", "target", "holds"]]
    lines += [[str(r["benchmark"]), str(r["measure"]), str(r["value"]), str(r["target"]),
               shown[r["holds"]]] for r in rows]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = [
        " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    known = scripts()
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (known: {', '.join(known)})")
    rows: list[dict[str, object]] = []
    failed = 0
    for name in args.names or known:
        found, status, seconds = run(name)
        if status != 0:
            failed += 1
            found.append({"benchmark": name, "measure": f"the script (exit {status})",
                          "value": "failed", "target": "runs", "holds": False})  # fmt: skip
        elif not found:
            found.append({"benchmark": name, "measure": "(the script prints no headline)",
                          "value": "-", "target": "-", "holds": None})  # fmt: skip
        for row in found:
            row["benchmark"] = f"{row['benchmark']} ({seconds / 60:.0f} min)"
        rows += found
    print("\n== summary: every benchmark's headline against its target\n")
    print(table(rows))
    missed = sum(1 for r in rows if r["holds"] is False)
    print(f"\n{missed} of {sum(1 for r in rows if r['holds'] is not None)} targets missed;"
          f" load average now {os.getloadavg()[0]:.1f}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
