"""``python -m evaluator rank``: rank the teams of a CSV table (one row per team).

Metric columns are the registry's keys (``mae``, ``psnr``, ``ms_ssim``, ``dice_bone``, ...)
with the registry's direction, plus columns declared ``--higher-is-better``/
``--lower-is-better``. A column of numbers that is neither is an unknown metric: an input
error, since its direction would be a guess. Columns holding text (team names,
affiliations) are ignored with a note on stderr. Cells: numbers, ``inf``/``-inf``, empty
(missing) or ``nan`` (failed); a row with a missing or failed ranked value is unrankable
(rank null).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from evaluator.errors import EvaluationInputError
from evaluator.metrics import DirectionError, resolve_direction, spec_for
from evaluator.ranking import METHODS, rank_submissions

_SPECIAL = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
            "-inf": -math.inf, "-infinity": -math.inf, "nan": math.nan}


def parse_cell(raw: str) -> float | None:
    """A cell's value: None when empty; ValueError when it is not a number."""
    text = raw.strip()
    if not text:
        return None
    special = _SPECIAL.get(text.lower())
    return special if special is not None else float(text)


def _numeric(cells: Sequence[str]) -> bool:
    try:
        return any(parse_cell(c) is not None for c in cells)
    except ValueError:
        return False


def read_table(
    path: Path,
    id_column: str,
    declared: dict[str, bool],
    ignored: Sequence[str] = (),
) -> tuple[list[str], dict[str, dict[str, float | None]], dict[str, bool], list[str]]:
    """(ids in table order, values, metric directions, notes) of a team table."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
    if id_column not in header:
        raise EvaluationInputError(
            f"{path}: no column '{id_column}' (columns: {', '.join(header)})")
    for name in declared:
        if name not in header:
            raise EvaluationInputError(f"{path}: declared metric column '{name}' is not in "
                                       f"the table (columns: {', '.join(header)})")
    metrics: dict[str, bool] = {}
    notes: list[str] = []
    for name in header:
        if name == id_column or name in ignored:
            continue
        cells = [r.get(name, "") for r in rows]
        try:
            if name in declared or spec_for(name) is not None:
                metrics[name] = resolve_direction(name, declared.get(name))
            elif _numeric(cells):
                raise EvaluationInputError(
                    f"column '{name}' holds numbers but is not a known metric; declare it "
                    f"with --higher-is-better {name} or --lower-is-better {name}, or "
                    f"--ignore-column {name}")
            else:
                notes.append(f"note: column '{name}' is not a metric; ignored")
        except DirectionError as exc:
            raise EvaluationInputError(str(exc)) from exc
    if not metrics:
        raise EvaluationInputError(f"{path}: no metric columns (known: mae, psnr, ssim, "
                                   "ms_ssim, dice, hd95, ...; or declare custom ones)")
    ids: list[str] = []
    values: dict[str, dict[str, float | None]] = {}
    for line, r in enumerate(rows, start=2):
        team = r.get(id_column, "").strip()
        if not team:
            raise EvaluationInputError(f"{path}:{line}: empty '{id_column}'")
        if team in values:
            raise EvaluationInputError(f"{path}:{line}: '{team}' appears twice in "
                                       f"'{id_column}'; one row per team")
        row: dict[str, float | None] = {}
        for m in metrics:
            try:
                row[m] = parse_cell(r.get(m, ""))
            except ValueError:
                raise EvaluationInputError(
                    f"{path}:{line}: column '{m}' has '{r.get(m)}', not a number "
                    "(write a number, inf, -inf, nan or leave it empty)") from None
        ids.append(team)
        values[team] = row
    return ids, values, metrics, notes


def parse_groups(raw: str | None) -> dict[str, list[str]] | None:
    if raw is None:
        return None
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        groups = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvaluationInputError(f"--groups is not JSON: {exc}") from exc
    if not isinstance(groups, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(m, str) for m in v)
        for k, v in groups.items()
    ):
        raise EvaluationInputError(
            '--groups must be a JSON object of lists, e.g. {"image": ["mae", "psnr"]}')
    return groups


def rank_table(args: argparse.Namespace) -> dict[str, int | None]:
    declared = {c: True for c in args.higher_is_better} | {c: False for c in args.lower_is_better}
    both = set(args.higher_is_better) & set(args.lower_is_better)
    if both:
        raise EvaluationInputError(f"{', '.join(sorted(both))} declared both higher and lower "
                                   "is better")
    ids, values, metrics, notes = read_table(args.table, args.id_column, declared,
                                             args.ignore_column)
    for note in notes:
        print(note, file=sys.stderr)
    if args.metric is not None and args.metric not in metrics:
        raise EvaluationInputError(f"--metric {args.metric} is not a metric column of the table")
    try:
        results = rank_submissions(values, metrics, args.method, args.metric,
                                   parse_groups(args.groups))
    except ValueError as exc:
        raise EvaluationInputError(str(exc)) from exc
    order = sorted(ids, key=lambda t: (not results[t].complete, results[t].rank, ids.index(t)))
    return {t: results[t].rank if results[t].complete else None for t in order}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, type=Path, help="CSV, one row per team")
    p.add_argument("--id-column", required=True, help="column naming the team")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--groups", help='JSON {"group": ["metric", ...]} for '
                   "grouped_normalized_sum (default: the registry's groups); @FILE reads it")
    p.add_argument("--higher-is-better", action="extend", nargs="+", default=[],
                   metavar="COL",
                   help="declare custom metric columns where higher is better")
    p.add_argument("--lower-is-better", action="extend", nargs="+", default=[],
                   metavar="COL",
                   help="declare custom metric columns where lower is better")
    p.add_argument("--metric", help="the metric of --method absolute (default: the first)")
    p.add_argument("--ignore-column", action="extend", nargs="+", default=[],
                   metavar="COL",
                   help="numeric columns that are not metrics (e.g. a published rank)")


def run(args: argparse.Namespace) -> int:
    print(json.dumps(rank_table(args)))
    return 0
