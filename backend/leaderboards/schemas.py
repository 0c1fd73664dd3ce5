from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from backend.models import RankingMethod


class ColumnOut(BaseModel):
    metric: str
    higher_is_better: bool
    label: str


# JSON has no Infinity: +inf (a perfect PSNR) is written as the string "Infinity".
_INF_AS_STRING = ConfigDict(ser_json_inf_nan="strings")


class LeaderboardRow(BaseModel):
    model_config = _INF_AS_STRING
    rank: int | None
    username: str
    submission_id: int
    created_at: datetime
    is_baseline: bool
    is_disqualified: bool
    score: float | None
    values: dict[str, float | None]
    ranks: dict[str, int | None]
    # Is this row's difference to the next ranked row significant? (None: no next row, or
    # not computed yet)
    significant_vs_next: bool | None = None
    cases: int = 0  # cases scored
    rank_interval: tuple[float, float] | None = None  # 95 % bootstrap rank range


class PairSignificance(BaseModel):
    """Paired Wilcoxon signed-rank test over cases of two adjacent ranked rows, on one
    metric; ``p_holm`` is Holm-corrected over every test of the leaderboard."""

    upper_submission_id: int
    lower_submission_id: int
    metric: str
    cases: int
    p_value: float
    p_holm: float
    significant: bool


class Leaderboard(BaseModel):
    model_config = _INF_AS_STRING
    challenge: str
    phase: str
    ranking_method: RankingMethod
    columns: list[ColumnOut]
    rows: list[LeaderboardRow]
    significance: list[PairSignificance] = []  # of this page's rows vs their next row
    total: int = 0  # rows in the whole leaderboard; ``rows`` is the page offset..offset+limit
    offset: int = 0
    limit: int | None = None
