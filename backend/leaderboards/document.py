"""Computing a phase's leaderboard document: the counted submissions picked per team, ranked
by the phase's method, with case counts; then, separately, the bootstrap rank ranges. Called
only by a recomputation (``service``), never per read.

The ranks take a fraction of a second at thousands of submissions; the bootstrap takes
seconds, so it is a second step (``intervals``) that the worker adds to the stored document
(``intervals_pending`` until then) without holding the phase's lock.

The document is plain JSON (stored in ``leaderboard_snapshots``) and the same for every
viewer; what depends on the viewer (own rows, links) is decided when it is shown.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.orm import Session

from backend.leaderboards import repository as repo
from backend.leaderboards.ranking import Column, rank_rows
from backend.leaderboards.stability import Interval, rank_intervals
from backend.models import Phase, RankingMethod, SubmissionSelection
from backend.numbers import finite_or_none
from evaluator.metrics import spec_for

BOOTSTRAP_SAMPLES = 200


def columns_of(phase: Phase) -> list[Column]:
    cols = [Column(phase.primary_metric, phase.primary_higher_is_better)]
    for extra in phase.extra_columns or []:
        if extra.get("metric") and extra["metric"] != phase.primary_metric:
            cols.append(Column(str(extra["metric"]), bool(extra.get("higher_is_better"))))
    return cols


def _label(metric: str) -> str:
    spec = spec_for(metric)
    return spec.label if spec is not None else metric


def _value(entry: repo.Entry, metric: str) -> float | None:
    return finite_or_none((entry.metrics or {}).get(metric))


def _pick(entries: list[repo.Entry], phase: Phase) -> repo.Entry:
    if phase.submission_selection is SubmissionSelection.LATEST:
        return max(entries, key=lambda e: (e.created_at, e.submission_id))
    sign = -1.0 if phase.primary_higher_is_better else 1.0

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
        "values": {c.metric: _value(entry, c.metric) for c in cols},
        "ranks": {c.metric: (ranks or {}).get(c.metric) for c in cols},
        "cases": entry.cases_scored,
        "interval": None,
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
    }


def intervals(session: Session, phase: Phase, doc: dict[str, Any]) -> dict[int, Interval]:
    """Bootstrap rank ranges of the document's ranked rows over their per-case results."""
    ranked_ids = [r["submission_id"] for r in doc["rows"] if r["rank"] is not None]
    return rank_intervals(repo.case_metrics(session, ranked_ids), columns_of(phase),
                          phase.ranking_method, samples=BOOTSTRAP_SAMPLES)


def with_intervals(doc: dict[str, Any], found: dict[int, Interval]) -> dict[str, Any]:
    rows = []
    for row in doc["rows"]:
        iv = found.get(row["submission_id"]) if row["rank"] is not None else None
        rows.append({**row, "interval": None if iv is None else [float(iv[0]), float(iv[1])]})
    return {**doc, "rows": rows, "has_intervals": bool(found), "intervals_pending": False}


def etag_of(doc: dict[str, Any]) -> str:
    """A content hash: an unchanged leaderboard keeps its ETag across recomputations."""
    body = {k: v for k, v in doc.items() if k != "version"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                            .encode()).hexdigest()
    return digest[:32]


__all__ = ["BOOTSTRAP_SAMPLES", "RankingMethod", "columns_of", "compute", "etag_of",
           "intervals", "with_intervals"]
