"""Celery's ``celery.utils`` import paths, kept for code ported from Celery (compat shim)."""
