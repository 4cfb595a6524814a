"""Celery's ``celery.bin`` import path, kept for code ported from Celery (compat shim).

The commands themselves live in ``celeriac.cli``.
"""
