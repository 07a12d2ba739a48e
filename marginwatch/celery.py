"""The Celery app that Celery's own commands, Flower and celery-exporter load to watch a running
deployment: ``celery -A marginwatch inspect ping``. It reads the ``MARGINWATCH_*`` settings (the
broker, its transport options) when first used, not at import; its tasks live in the daemons."""

from marginwatch.runtime.celery_app import attachable_app

app = attachable_app()
