"""Celery workers: run submissions in the Docker sandbox, evaluate, rank."""
