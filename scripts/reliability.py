#!/usr/bin/env python3
"""Rerun the whole reliability suite (tests/reliability: hostile containers and uploads, web
security, faults, load) and print the figures: attacks tried/contained, faults survived,
submissions lost, API latency p50/p99 under load. With --write, also (re)write the figures
table in docs/RELIABILITY.md between its markers.

    .venv/bin/python scripts/reliability.py [--write] [--skip-run] [pytest args...]

Needs Docker, Redis and PostgreSQL (scripts/services.sh), gcc, and the PostgreSQL 15 binaries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "build" / "reliability" / "figures.json"
DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- reliability-figures:begin -->", "<!-- reliability-figures:end -->"


def run_suite(extra: list[str]) -> int:
    FIGURES.unlink(missing_ok=True)
    env = {**os.environ, "SYNTHARENA_RELIABILITY_FIGURES": str(FIGURES)}
    env.setdefault("SYNTHARENA_TEST_DATABASE_URL",
                   "postgresql+psycopg://postgres@127.0.0.1:5432/syntharena_test")
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
           *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def table(d: dict[str, Any]) -> str:
    attacks = d.get("attacks", {})
    faults = d.get("faults", {})
    load = d.get("load", {}).get("submissions", {})
    lat = d.get("latency", {}).get("under-load", {})
    kinds: dict[str, list[bool]] = {}
    for a in attacks.values():
        kinds.setdefault(a.get("kind", "?"), []).append(bool(a.get("contained")))
    lost = sum(int(f.get("lost", 0)) for f in faults.values()) + int(load.get("lost", 0))
    lines = ["| Figure | Value |", "|---|---|"]
    for kind, label in (("container", "Hostile containers (real pipeline)"),
                        ("upload", "Hostile uploads (API)"),
                        ("api", "Hostile API input (identities, control bytes, numbers, secrets)"),
                        ("web", "Web security checks")):
        v = kinds.get(kind, [])
        lines.append(f"| {label}: contained / tried | {sum(v)} / {len(v)} |")
    lines.append(f"| **Attacks contained / tried** | **{sum(sum(v) for v in kinds.values())} / "
                 f"{sum(len(v) for v in kinds.values())}** |")
    survived = sum(bool(f.get("survived")) for f in faults.values())
    lines.append(f"| **Faults survived / injected** | **{survived} / {len(faults)}** |")
    if load:
        lines.append(f"| Load: submissions accepted (50 users x 4 phases, each sent twice) | "
                     f"{load.get('accepted')} of {load.get('attempts')} "
                     f"(refused by the limits: {load.get('refused')}) |")
        lines.append(f"| Load: succeeded / duplicated / left in queue | {load.get('succeeded')} "
                     f"/ {load.get('duplicated')} / {load.get('queue_left')} "
                     f"(drained in {load.get('drain_s')} s) |")
        lines.append(f"| Load: HTTP 5xx answers to the submission burst (any fails the test) | "
                     f"{load.get('server_errors', 0)} of {load.get('attempts')} |")
    lines.append(f"| **Submissions lost** | **{lost}** |")
    if lat:
        for k in ("leaderboard", "status"):
            lines.append(f"| API latency under load, {k} (p50 / p99) | "
                         f"{lat.get(f'{k}_p50_ms')} ms / {lat.get(f'{k}_p99_ms')} ms "
                         f"({int(lat.get(f'{k}_requests', 0))} requests, "
                         f"{lat.get('connections')} connections) |")
    lines.append("")
    lines.append("| Attack / fault | Outcome |")
    lines.append("|---|---|")
    for name, a in sorted(attacks.items()):
        mark = "contained" if a.get("contained") else "**NOT CONTAINED**"
        outcome = str(a.get("outcome", "")).replace("|", "/").replace("\n", " ")[:140]
        lines.append(f"| {name} | {mark}: {outcome} |")
    for name, f in sorted(faults.items()):
        mark = "survived" if f.get("survived") else "**FAILED**"
        lines.append(f"| fault: {name} | {mark}: {str(f.get('detail', ''))[:160]} |")
    return "\n".join(lines)


def main() -> int:
    args = sys.argv[1:]
    write = "--write" in args
    skip = "--skip-run" in args
    extra = [a for a in args if a not in ("--write", "--skip-run")]
    rc = 0 if skip else run_suite(extra)
    try:
        data = json.loads(FIGURES.read_text())
    except (OSError, ValueError):
        print("no figures recorded (did the suite run?)", file=sys.stderr)
        return rc or 1
    text = table(data)
    print(text)
    if write and DOC.exists():
        doc = DOC.read_text()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
            print(f"\nwrote the figures into {DOC.relative_to(ROOT)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
