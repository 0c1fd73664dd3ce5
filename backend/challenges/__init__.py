"""Challenges, their phases and memberships."""
