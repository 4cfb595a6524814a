"""Wire shapes shared with Celery: envelopes, task messages, result meta and events."""
