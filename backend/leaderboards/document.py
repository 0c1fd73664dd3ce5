"""Computing a phase's leaderboard document: the counted submissions picked per team, ranked
by the phase's method, with case counts; then, separately, the bootstrap rank ranges. Called
only by a recomputation (``service``), never per read.

The ranks take a fraction of a second at thousands of submissions; the bootstrap rank ranges
and the significance of adjacent ranks (paired Wilcoxon over cases, Holm-corrected) need every
case's metrics and take seconds, so they are a second step (``extras``) that the worker adds to
the stored document (``intervals_pending`` until then) without holding the phase's lock.
Metric values are stored encoded (``backend.numbers.storable``: ±inf as strings).

The document is plain JSON (stored in ``leaderboard_snapshots``) and the same for every
viewer; what depends on the viewer (own rows, links) is decided when it is shown.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from backend.leaderboards import repository as repo
from backend.leaderboards.ranking import Column, column, number, rank_rows, ranked_columns
from backend.leaderboards.stability import Interval, rank_intervals
from backend.models import Phase, RankingMethod, SubmissionSelection
from backend.numbers import finite_or_none, storable
from evaluator.metrics import spec_for
from evaluator.significance import adjacent_significance

BOOTSTRAP_SAMPLES = 200


def columns_of(phase: Phase) -> list[Column]:
    """The primary metric, then the extra columns (directions from the metric registry; an
    extra entry naming the primary metric may only set its ranking group)."""
    extras = [e for e in phase.extra_columns or [] if e.get("metric")]
    primary_group = next((e.get("group") for e in extras
                          if e["metric"] == phase.primary_metric), None)
    cols = [column(phase.primary_metric, phase.primary_higher_is_better, primary_group)]
    for extra in extras:
        if extra["metric"] != phase.primary_metric:
            cols.append(column(str(extra["metric"]), extra.get("higher_is_better"),
                               extra.get("group")))
    return cols


def _label(metric: str) -> str:
    spec = spec_for(metric)
    return spec.label if spec is not None else metric


def _value(entry: repo.Entry, metric: str) -> float | None:
    return number((entry.metrics or {}).get(metric))  # ±inf kept: a perfect PSNR is best


def _pick(entries: list[repo.Entry], phase: Phase) -> repo.Entry:
    if phase.submission_selection is SubmissionSelection.LATEST:
        return max(entries, key=lambda e: (e.created_at, e.submission_id))
    sign = -1.0 if columns_of(phase)[0].higher_is_better else 1.0

    def key(e: repo.Entry) -> tuple[int, float, int]:
        v = _value(e, phase.primary_metric)
        return (1, 0.0, e.submission_id) if v is None else (0, sign * v, e.submission_id)

    return min(entries, key=key)


def _row(entry: repo.Entry, cols: list[Column], rank: int | None = None,
         score: float | None = None, ranks: dict[str, int | None] | None = None,
         ) -> dict[str, Any]:
    return {
        "rank": rank,
        "username": entry.username,
        "user_id": entry.user_id,
        "submission_id": entry.submission_id,
        "created_at": entry.created_at.isoformat(),
        "is_baseline": entry.is_baseline,
        "is_disqualified": entry.is_disqualified,
        "score": finite_or_none(score),
        "values": storable({c.metric: _value(entry, c.metric) for c in cols}),
        "ranks": {c.metric: (ranks or {}).get(c.metric) for c in cols},
        "cases": entry.cases_scored,
        "interval": None,
        "significant_vs_next": None,
    }


def compute(session: Session, phase: Phase, version: int) -> dict[str, Any]:
    cols = columns_of(phase)
    by_user: dict[int, list[repo.Entry]] = {}
    baselines: list[repo.Entry] = []
    disqualified: dict[int, list[repo.Entry]] = {}
    for entry in repo.scored_submissions(session, phase.id):
        if entry.is_baseline:
            baselines.append(entry)
        elif entry.is_disqualified:
            disqualified.setdefault(entry.user_id, []).append(entry)
        else:
            by_user.setdefault(entry.user_id, []).append(entry)
    picked = [_pick(entries, phase) for entries in by_user.values()]
    ranked = rank_rows([{c.metric: _value(e, c.metric) for c in cols} for e in picked], cols,
                       phase.ranking_method)
    rows = [_row(e, cols, r.rank, r.score, r.metric_ranks)
            for e, r in zip(picked, ranked, strict=True)]
    # Ranked rows first (by rank, then submission time); unranked ones never above them.
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["created_at"],
                             r["submission_id"]))
    rows += [_row(e, cols) for e in baselines]
    rows += [_row(p, cols) for p in (_pick(v, phase) for v in disqualified.values())]
    ranked_n = sum(1 for r in rows if r["rank"] is not None)
    return {
        "version": version,
        "ranking_method": phase.ranking_method.value,
        "columns": [{"metric": c.metric, "higher_is_better": c.higher_is_better,
                     "label": _label(c.metric)} for c in cols],
        "rows": rows,
        "ranked": ranked_n,
        "has_intervals": False,
        "intervals_pending": ranked_n >= 2,
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "significance": [],
    }


@dataclass(frozen=True)
class Extras:
    """What needs every case's metrics: rank ranges and adjacent-rank significance."""

    intervals: dict[int, Interval]
    significance: list[dict[str, Any]]


def intervals(session: Session, phase: Phase, doc: dict[str, Any]) -> Extras:
    """Bootstrap rank ranges of the document's ranked rows over their per-case results, and
    for each pair of adjacent ranks a paired Wilcoxon test per ranked metric (Holm)."""
    ranked_ids = [r["submission_id"] for r in doc["rows"] if r["rank"] is not None]
    per_case = repo.case_metrics(session, ranked_ids)
    cols = columns_of(phase)
    found = rank_intervals(per_case, cols, phase.ranking_method, samples=BOOTSTRAP_SAMPLES)
    tests = adjacent_significance(
        {str(s): {str(c): m for c, m in cases.items()} for s, cases in per_case.items()},
        [str(s) for s in ranked_ids],
        [c.metric for c in ranked_columns(cols, phase.ranking_method)])
    significance = [
        {"upper_submission_id": int(t.upper), "lower_submission_id": int(t.lower),
         "metric": t.metric, "cases": t.cases, "p_value": finite_or_none(t.p_value),
         "p_holm": finite_or_none(t.p_holm), "significant": bool(t.significant)}
        for t in tests]
    return Extras(found, significance)


def with_intervals(doc: dict[str, Any], found: Extras) -> dict[str, Any]:
    upper: dict[int, bool] = {}
    for p in found.significance:
        upper[p["upper_submission_id"]] = upper.get(p["upper_submission_id"], False) \
            or p["significant"]
    rows = []
    for row in doc["rows"]:
        iv = found.intervals.get(row["submission_id"]) if row["rank"] is not None else None
        rows.append({**row, "interval": None if iv is None else [float(iv[0]), float(iv[1])],
                     "significant_vs_next": upper.get(row["submission_id"])})
    return {**doc, "rows": rows, "has_intervals": bool(found.intervals),
            "intervals_pending": False, "significance": found.significance}


def etag_of(doc: dict[str, Any]) -> str:
    """A content hash: an unchanged leaderboard keeps its ETag across recomputations."""
    body = {k: v for k, v in doc.items() if k != "version"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                            .encode()).hexdigest()
    return digest[:32]


__all__ = ["BOOTSTRAP_SAMPLES", "RankingMethod", "columns_of", "compute", "etag_of",
           "intervals", "with_intervals"]
