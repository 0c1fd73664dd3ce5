"""The leaderboard page's view model over the stored leaderboard
(``backend.leaderboards.service.board``): own rows, baselines, rank-stability intervals,
server-side sorting and pages (so it works without JS). Only the page's rows are turned into
view rows; nothing here queries per row."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from backend import access
from backend.leaderboards import service as leaderboards_service
from backend.models import Challenge, Phase, RankingMethod, SubmissionSelection, User
from backend.numbers import metric_value
from backend.web.metrics_meta import MetricMeta
from backend.web.plots import rank_interval
from backend.web.templating import templates
from backend.web.views import RANKING_TEXT, phase_columns

DEFAULT_PER_PAGE, MAX_PER_PAGE = 100, 1000


@dataclass
class LbRow:
    rank: int | None
    team: str
    submission_id: int
    created_at: datetime
    values: dict[str, float | None]
    metric_ranks: dict[str, int | None]
    score: float | None
    own: bool
    baseline: bool
    disqualified: bool
    cases: int
    can_open: bool
    comment: str = ""
    interval: tuple[float, float] | None = None
    interval_svg: Markup = field(default_factory=Markup)
    significant_vs_next: bool | None = None  # paired Wilcoxon vs the next rank (Holm)


@dataclass
class LbView:
    columns: list[MetricMeta]
    rows: list[LbRow]
    sort: str
    dir: str
    method_text: str
    selection_text: str
    score_label: str
    score_higher_is_better: bool
    has_intervals: bool
    bootstrap_samples: int
    csv_url: str
    note: str = ""
    page: int = 1
    pages: int = 1
    per_page: int = DEFAULT_PER_PAGE
    total: int = 0
    ranked: int = 0
    rows_html: Markup = field(default_factory=Markup)


SCORE_LABELS = {
    RankingMethod.MEAN_RANK: ("Mean rank", False),
    RankingMethod.MEDIAN_RANK: ("Median rank", False),
    RankingMethod.NORMALIZED_SUM: ("Score", True),
    RankingMethod.GROUPED_NORMALIZED_SUM: ("Score", True),
}


def _sort_key(key: str, row: dict[str, Any]) -> Any:
    if key == "team":
        return str(row["username"]).lower()
    if key == "submitted":
        return row["created_at"]  # ISO 8601 in UTC: sorts as the time does
    if key in ("cases", "score", "rank"):
        return row.get(key)
    return metric_value(row["values"].get(key))


def sort_rows(rows: list[dict[str, Any]], key: str, direction: str) -> list[dict[str, Any]]:
    """Missing values go last in either direction (NaN never ranks above a number); ties
    keep the leaderboard's order, so pages are stable."""
    present = [r for r in rows if _sort_key(key, r) is not None]
    missing = [r for r in rows if _sort_key(key, r) is None]
    present.sort(key=lambda r: _sort_key(key, r), reverse=direction == "desc")
    return present + missing


def build(
    session: Session,
    user: User | None,
    challenge: Challenge,
    phase: Phase,
    sort: str = "rank",
    direction: str = "asc",
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
) -> LbView:
    found = leaderboards_service.board(session, user, challenge, phase)
    doc = found.doc
    organizer = access.is_organizer(session, user, challenge.id)
    columns = phase_columns(phase)
    valid_keys = {"rank", "team", "submitted", "cases", "score", *(c.name for c in columns)}
    sort = sort if sort in valid_keys else "rank"
    direction = direction if direction in ("asc", "desc") else "asc"
    rows: list[dict[str, Any]] = doc["rows"]
    if sort != "rank" or direction != "asc":
        rows = sort_rows(rows, sort, direction)
    per_page = min(max(per_page, 1), MAX_PER_PAGE)
    pages = max(1, -(-len(rows) // per_page))
    page = min(max(page, 1), pages)
    ranked_n = int(doc.get("ranked", 0))
    own_id = user.id if user is not None else None
    view_rows = [_view_row(r, own_id, organizer, ranked_n)
                 for r in rows[(page - 1) * per_page:page * per_page]]
    # The same page looks the same to every viewer without own rows on it (organisers: links
    # on every row), so its rendered rows are kept per stored document.
    viewer = "organizer" if organizer else (own_id if any(r.own for r in view_rows) else "")
    rows_key = (phase.id, found.etag, sort, direction, page, per_page, viewer)
    score_label, score_hib = SCORE_LABELS.get(phase.ranking_method, ("", False))
    selection = (
        "Each team's best submission counts"
        if phase.submission_selection is SubmissionSelection.BEST
        else "Each team's latest successful submission counts"
    )
    note = ""
    if any(r["is_disqualified"] for r in doc["rows"]):
        note = "Disqualified submissions are listed at the end without a rank."
    view = LbView(
        columns=columns,
        rows=view_rows,
        sort=sort,
        dir=direction,
        method_text=RANKING_TEXT.get(phase.ranking_method, phase.ranking_method.value),
        selection_text=selection,
        score_label=score_label,
        score_higher_is_better=score_hib,
        has_intervals=bool(doc.get("has_intervals")),
        bootstrap_samples=int(doc.get("bootstrap_samples", 0)),
        csv_url=f"/challenges/{challenge.slug}/{phase.slug}/leaderboard.csv",
        note=note,
        page=page,
        pages=pages,
        per_page=per_page,
        total=len(rows),
        ranked=ranked_n,
    )
    view.rows_html = _rows_html(rows_key, view)
    return view


_rendered: OrderedDict[tuple[object, ...], Markup] = OrderedDict()
_rendered_lock = threading.Lock()


def _rows_html(key: tuple[object, ...], view: LbView) -> Markup:
    with _rendered_lock:
        html = _rendered.get(key)
    if html is None:
        # The template escapes every value (autoescape): its output is safe HTML.
        rendered = templates.get_template("_leaderboard_rows.html").render(lb=view)
        html = Markup(rendered)  # noqa: S704
        with _rendered_lock:
            _rendered[key] = html
            while len(_rendered) > 256:
                _rendered.popitem(last=False)
    return html


def _view_row(r: dict[str, Any], own_id: int | None, organizer: bool, ranked_n: int) -> LbRow:
    own = own_id is not None and r["user_id"] == own_id
    row = LbRow(
        rank=r["rank"],
        team=r["username"],
        submission_id=r["submission_id"],
        created_at=datetime.fromisoformat(r["created_at"]),
        values={k: metric_value(v) for k, v in r["values"].items()},
        metric_ranks=dict(r["ranks"]),
        score=r["score"],
        own=own,
        baseline=r["is_baseline"],
        disqualified=r["is_disqualified"],
        cases=int(r.get("cases", 0)),
        can_open=own or organizer,
        significant_vs_next=r.get("significant_vs_next"),
    )
    iv = r.get("interval")
    if iv is not None and row.rank is not None:
        row.interval = (float(iv[0]), float(iv[1]))
        row.interval_svg = rank_interval(row.rank, iv[0], iv[1], ranked_n)
    return row
