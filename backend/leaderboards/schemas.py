from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from backend.models import RankingMethod


class ColumnOut(BaseModel):
    metric: str
    higher_is_better: bool
    label: str


class LeaderboardRow(BaseModel):
    rank: int | None
    username: str
    submission_id: int
    created_at: datetime
    is_baseline: bool
    is_disqualified: bool
    score: float | None
    values: dict[str, float | None]
    ranks: dict[str, int | None]
    cases: int = 0  # cases scored
    rank_interval: tuple[float, float] | None = None  # 95 % bootstrap rank range


class Leaderboard(BaseModel):
    challenge: str
    phase: str
    ranking_method: RankingMethod
    columns: list[ColumnOut]
    rows: list[LeaderboardRow]
    total: int = 0  # rows in the whole leaderboard; ``rows`` is the page offset..offset+limit
    offset: int = 0
    limit: int | None = None
