"""Per-phase leaderboards (ranked on read from AggregateResult rows)."""
