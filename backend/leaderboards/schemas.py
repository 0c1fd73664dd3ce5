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


class Leaderboard(BaseModel):
    challenge: str
    phase: str
    ranking_method: RankingMethod
    columns: list[ColumnOut]
    rows: list[LeaderboardRow]
