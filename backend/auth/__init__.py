"""Accounts, sessions and API tokens."""
