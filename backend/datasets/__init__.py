"""Versioned hidden datasets and their import."""
