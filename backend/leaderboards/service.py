from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from sqlalchemy.orm import Session

from backend import access
from backend.errors import ForbiddenError
from backend.leaderboards import repository as repo
from backend.leaderboards.ranking import Column, column, number, rank_rows, ranked_columns
from backend.leaderboards.schemas import (
    ColumnOut,
    Leaderboard,
    LeaderboardRow,
    PairSignificance,
)
from backend.models import (
    AggregateResult,
    Challenge,
    Phase,
    RankingMethod,
    Submission,
    SubmissionSelection,
    User,
)
from evaluator.metrics import spec_for
from evaluator.significance import adjacent_significance


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


def _value(agg: AggregateResult, metric: str) -> float | None:
    return number(agg.metrics.get(metric))


def _pick(
    entries: list[tuple[Submission, str, AggregateResult]], phase: Phase
) -> tuple[Submission, str, AggregateResult]:
    if phase.submission_selection is SubmissionSelection.LATEST:
        return max(entries, key=lambda e: (e[0].created_at, e[0].id))
    sign = -1.0 if columns_of(phase)[0].higher_is_better else 1.0

    def key(e: tuple[Submission, str, AggregateResult]) -> tuple[int, float, int]:
        v = _value(e[2], phase.primary_metric)
        return (1, 0.0, e[0].id) if v is None else (0, sign * v, e[0].id)

    return min(entries, key=key)


def build(
    session: Session, user: User | None, challenge: Challenge, phase: Phase
) -> Leaderboard:
    if not phase.leaderboard_public and not access.is_organizer(
        session, user, challenge.id
    ):
        raise ForbiddenError("The leaderboard of this phase is hidden until the organisers "
                             "publish it.")
    cols = columns_of(phase)
    by_user: dict[int, list[tuple[Submission, str, AggregateResult]]] = {}
    baselines: list[tuple[Submission, str, AggregateResult]] = []
    disqualified: dict[int, list[tuple[Submission, str, AggregateResult]]] = {}
    for entry in repo.scored_submissions(session, phase.id):
        sub = entry[0]
        if sub.is_baseline:
            baselines.append(entry)
        elif sub.is_disqualified:
            disqualified.setdefault(sub.user_id, []).append(entry)
        else:
            by_user.setdefault(sub.user_id, []).append(entry)
    picked = [_pick(entries, phase) for entries in by_user.values()]
    ranked = rank_rows(
        [{c.metric: _value(e[2], c.metric) for c in cols} for e in picked],
        cols,
        phase.ranking_method,
    )
    rows = [_row(e, cols, r.rank, r.score, r.metric_ranks) for e, r in zip(picked, ranked,
                                                                          strict=True)]
    # Ranked rows first (by rank, then submission time); unranked ones never above them.
    rows.sort(key=lambda r: (r.rank is None, r.rank or 0, r.created_at, r.submission_id))
    significance = _significance(session, rows, ranked_columns(cols, phase.ranking_method))
    rows += [_row(e, cols, None, None, {}) for e in baselines]
    rows += [_row(_pick(v, phase), cols, None, None, {}) for v in disqualified.values()]
    return Leaderboard(
        challenge=challenge.slug,
        phase=phase.slug,
        ranking_method=phase.ranking_method,
        columns=[ColumnOut(metric=c.metric, higher_is_better=c.higher_is_better,
                           label=_label(c.metric)) for c in cols],
        rows=rows,
        significance=significance,
    )


def _significance(
    session: Session, rows: list[LeaderboardRow], ranked: Sequence[Column]
) -> list[PairSignificance]:
    """Adjacent ranked rows: paired Wilcoxon per ranked metric over cases, Holm-corrected."""
    order = [r.submission_id for r in rows if r.rank is not None]
    if len(order) < 2:
        return []
    per_case = repo.case_metrics(session, order)
    tests = adjacent_significance(
        {str(s): {str(c): m for c, m in cases.items()} for s, cases in per_case.items()},
        [str(s) for s in order], [c.metric for c in ranked])
    out = [PairSignificance(upper_submission_id=int(t.upper), lower_submission_id=int(t.lower),
                            metric=t.metric, cases=t.cases, p_value=t.p_value, p_holm=t.p_holm,
                            significant=t.significant) for t in tests]
    by_upper: dict[int, bool] = {}
    for p in out:
        by_upper[p.upper_submission_id] = by_upper.get(p.upper_submission_id, False) or (
            p.significant)
    for r in rows:
        r.significant_vs_next = by_upper.get(r.submission_id)
    return out


def _row(
    entry: tuple[Submission, str, AggregateResult],
    cols: list[Column],
    rank: int | None,
    score: float | None,
    ranks: dict[str, int | None],
) -> LeaderboardRow:
    sub, username, agg = entry
    return LeaderboardRow(
        rank=rank,
        username=username,
        submission_id=sub.id,
        created_at=sub.created_at,
        is_baseline=sub.is_baseline,
        is_disqualified=sub.is_disqualified,
        score=score,
        values={c.metric: _value(agg, c.metric) for c in cols},
        ranks={c.metric: ranks.get(c.metric) for c in cols},
    )


def to_csv(board: Leaderboard) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    metrics = [c.metric for c in board.columns]
    writer.writerow(
        ["rank", "username", "submission_id", "created_at", "baseline", "disqualified",
         "score", *metrics, *(f"{m}_rank" for m in metrics), "significant_vs_next",
         "p_holm_vs_next"]
    )
    p_next: dict[int, float] = {}
    for p in board.significance:  # the smallest adjusted p over the pair's metrics
        p_next[p.upper_submission_id] = min(p.p_holm, p_next.get(p.upper_submission_id, 1.0))
    for r in board.rows:
        writer.writerow(
            [r.rank if r.rank is not None else "", r.username, r.submission_id,
             r.created_at.isoformat(), int(r.is_baseline), int(r.is_disqualified),
             "" if r.score is None else r.score,
             *("" if r.values[m] is None else r.values[m] for m in metrics),
             *("" if r.ranks[m] is None else r.ranks[m] for m in metrics),
             "" if r.significant_vs_next is None else int(r.significant_vs_next),
             p_next.get(r.submission_id, "")]
        )
    return buf.getvalue()


__all__ = ["RankingMethod", "build", "columns_of", "to_csv"]
