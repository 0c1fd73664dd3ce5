"""Submissions: creation and limits, the state machine, organiser actions."""
