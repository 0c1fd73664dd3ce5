"""SynthArena evaluator: image, segmentation and dose metrics, ranking and phantoms.

A pure library (no database, Celery or web imports) with a CLI: ``python -m evaluator``.
"""
