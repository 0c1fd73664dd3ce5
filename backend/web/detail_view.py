"""The submission detail page: results, plots, per-case table, logs, slice viewer.

What the viewer sees (scores, per-case rows, logs, slice kinds) is decided by the one access
policy, ``backend.access.submission_view``, as in the API.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from backend import object_cache
from backend.access import SubmissionView
from backend.errors import AppError
from backend.leaderboards import service as leaderboards_service
from backend.leaderboards.cache import Stored
from backend.models import (
    Case,
    CaseRun,
    SubmissionStatus,
    User,
)
from backend.numbers import finite_or_none, metric_value
from backend.submissions import dose as case_dose
from backend.submissions import service as submissions_service
from backend.web import dose_view
from backend.web.metrics_meta import MetricMeta, metric_meta
from backend.web.plots import TeamValue, comparison_plot, distribution_plot
from backend.web.slices import shape_of
from backend.web.submission_views import submission_status
from backend.web.views import phase_columns

KIND_TITLES = {
    "input": "Input (MR / CBCT)",
    "sct": "Synthetic CT",
    "ct": "Reference CT",
    "diff": "sCT − CT",
}
MAX_VIEWER_CASES = 50


def viewer_kinds(view: SubmissionView) -> list[tuple[str, str]]:
    return [(k, KIND_TITLES[k]) for k in view.images]


@dataclass
class CaseRowView:
    name: str
    status: str
    duration: float | None
    error: str
    metrics: dict[str, float | None]
    warning: str = ""


@dataclass
class LogView:
    name: str
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    failed: bool


@dataclass
class ViewerCase:
    name: str
    region: str
    shape: list[int]
    dose: list[str]  # modalities with stored dose views


def _dose_modalities(view: SubmissionView, run: CaseRun, case: Case) -> list[str]:
    """The modalities of the case's stored dose views (read from their small JSON)."""
    if not view.dose or not run.prediction_path:
        return []
    meta = case_dose.meta_of(run.prediction_path, case.name)
    return [m for m in dose_view.MODALITIES if m in (meta or {}).get("modalities", {})]


def _spread(statistics: dict[str, Any], metric: str) -> float | None:
    """The standard deviation over cases, wherever the aggregate keeps it
    ({"per_metric": {"mae": {"std": …}}}, {"mae": {"std": …}} or "mae_std")."""
    per_metric = statistics.get("per_metric")
    nested = per_metric.get(metric) if isinstance(per_metric, dict) else statistics.get(metric)
    if isinstance(nested, dict):
        return finite_or_none(nested.get("std"))
    return finite_or_none(statistics.get(f"{metric}_std"))


def build(session: Session, user: User, submission_id: int) -> dict[str, Any]:
    opened = submissions_service.open_page(session, user, submission_id)
    sub, phase, view = opened.sub, opened.phase, opened.view
    challenge, owner, image = opened.challenge, opened.owner, opened.image
    assert image is not None
    organizer = view.organizer
    columns = phase_columns(phase)

    aggregate: dict[str, float | None] | None = None
    spreads: dict[str, float | None] = {}
    cases_scored = 0
    agg = submissions_service.scores(session, sub, view)
    if agg is not None:
        aggregate = {c.name: metric_value(agg.metrics.get(c.name)) for c in columns}
        spreads = {c.name: _spread(agg.statistics or {}, c.name) for c in columns}
        cases_scored = agg.cases_scored

    case_rows: list[CaseRowView] = []
    logs: list[LogView] = []
    viewer_cases: list[ViewerCase] = []
    extra: list[str] = []
    complete = True  # False: the storage did not answer, the page is not kept
    records = submissions_service.case_records(session, sub, view)
    kinds = viewer_kinds(view)
    for record in records:
        run, name = record.run, record.name
        m = {str(k): metric_value(v) for k, v in (record.metrics or {}).items()}
        if view.cases:
            case_rows.append(CaseRowView(name, run.status.value, run.duration_s,
                                         run.error_message, m, run.warning))
        if view.logs and (run.stdout or run.stderr or run.status.value != "pending"):
            logs.append(LogView(name, run.status.value, run.exit_code, run.stdout, run.stderr,
                                run.status.value in ("failed", "timed_out")))
        if kinds and view.cases and len(viewer_cases) < MAX_VIEWER_CASES and (
            run.prediction_path or organizer
        ):
            case = record.case
            shape, answered = _input_shape(case.input_image_path)
            complete = complete and answered
            if shape is not None:
                viewer_cases.append(ViewerCase(name, case.region, list(shape),
                                               _dose_modalities(view, run, case)))
    if case_rows:
        names = {c.name for c in columns}
        extra = sorted({k for r in case_rows for k in r.metrics if k not in names})[:8]

    distribution = []
    if case_rows and any(r.metrics is not None for r in records):
        for c in columns + [metric_meta(x) for x in extra[:2]]:
            values = [(r.name, r.metrics.get(c.name)) for r in case_rows]
            if any(v is not None for _, v in values):
                distribution.append(distribution_plot(
                    values, metric_label=c.label, unit=c.unit,
                    higher_is_better=c.higher_is_better))

    comparison: list[Any] = []
    rank = None
    ranked_count = 0
    if sub.status is SubmissionStatus.SUCCEEDED and view.scores:
        try:
            found: Stored | None = leaderboards_service.board(session, user, challenge, phase)
        except AppError:
            found = None
        if found is not None:
            # An organiser looking at alice's submission is not alice.
            own_note = " (you)" if sub.user_id == user.id else " (this submission)"
            key = (phase.id, found.etag, sub.id, own_note, tuple(c.name for c in columns),
                   tuple(sorted((aggregate or {}).items())))
            with _plots_lock:
                cached = _plots.get(key)
            if cached is None:
                cached = _comparison(found.doc, sub.id, columns, aggregate, own_note)
                with _plots_lock:
                    _plots[key] = cached
                    while len(_plots) > 512:
                        _plots.popitem(last=False)
            comparison, rank = cached
            ranked_count = int(found.doc.get("ranked", 0))

    return {
        "sub": sub,
        "phase": phase,
        "challenge": challenge,
        "owner": owner,
        "image": image,
        "status": submission_status(session, sub),
        "is_organizer": organizer,
        "can_cancel": (organizer or sub.user_id == user.id)
        and sub.status.value in ("pending", "running", "evaluating"),
        "columns": columns,
        "aggregate": aggregate,
        "spreads": spreads,
        "cases_scored": cases_scored,
        "cases_total": sub.cases_total,
        "case_policy": phase.case_policy.value,
        "show_cases": view.cases,
        "case_rows": case_rows,
        "extra_case_metrics": extra,
        "logs": logs,
        "viewer_cases": viewer_cases,
        "viewer_kinds": kinds,
        "dose_kinds": [(k, dose_view.TITLES[k]) for k in view.dose]
        if any(c.dose for c in viewer_cases) else [],
        "dose_over": "CT" if view.ground_truth else "sCT",
        "distribution_plots": distribution,
        "comparison_plots": comparison,
        "rank": rank,
        "ranked_count": ranked_count,
        "is_challenge_organizer": organizer,  # the access policy's answer, asked once
        "complete": complete,
    }


COMPARED_TEAMS = 25
# Comparison plots by (phase, stored leaderboard's ETag, submission, columns, its aggregate):
# they change only when the leaderboard does.
_plots: OrderedDict[tuple[object, ...], tuple[list[Any], int | None]] = OrderedDict()
_plots_lock = threading.Lock()


def _comparison(doc: dict[str, Any], sub_id: int, columns: list[MetricMeta],
                aggregate: dict[str, float | None] | None,
                own_note: str) -> tuple[list[Any], int | None]:
    """Comparison plots (the top teams and this submission) and its rank, from the stored
    leaderboard; disqualified rows are not compared against."""
    rows = [r for r in doc["rows"] if not r["is_disqualified"]]
    own = next((r for r in doc["rows"] if r["submission_id"] == sub_id), None)
    shown = rows[:COMPARED_TEAMS]
    plots = []
    for c in columns:
        teams = [TeamValue(label=r["username"], value=metric_value(r["values"].get(c.name)),
                           own=r["submission_id"] == sub_id, baseline=r["is_baseline"])
                 for r in shown]
        if not any(t.own for t in teams):
            if own is not None and not own["is_disqualified"]:
                teams.append(TeamValue(label=own["username"],
                                       value=metric_value(own["values"].get(c.name)),
                                       own=True, baseline=own["is_baseline"]))
            elif aggregate is not None:
                teams.append(TeamValue(label=f"#{sub_id}", value=aggregate.get(c.name),
                                       own=True))
        if len(teams) > 1:
            plots.append(comparison_plot(teams, metric_label=c.label, unit=c.unit,
                                         higher_is_better=c.higher_is_better,
                                         own_note=own_note))
    return plots, None if own is None else own["rank"]


def _input_shape(key: str) -> tuple[tuple[int, int, int] | None, bool]:
    """The input's (z, y, x) for the viewer (None: the page shows no viewer for it) and
    whether the storage answered (a missing file is an answer; one that failed to read
    may be there at the next request)."""
    try:
        with object_cache.local_file(key) as path:
            return shape_of(path), True
    except FileNotFoundError:
        return None, True
    except OSError:
        return None, False
