"""The stored leaderboard of a phase: computed when something that ranks changes, read whole."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, utcnow


class LeaderboardSnapshot(Base):
    """One document per phase. ``version`` is the phase's ``leaderboard_version`` it was
    computed at: a lower one is stale (something changed since), -1 a placeholder row that
    only exists to be locked by the first recomputation."""

    __tablename__ = "leaderboard_snapshots"

    phase_id: Mapped[int] = mapped_column(
        ForeignKey("phases.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(default=-1)
    etag: Mapped[str] = mapped_column(String(80), default="")
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
