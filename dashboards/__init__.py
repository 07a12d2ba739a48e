"""Grafana dashboards of marginwatch, generated (``python -m dashboards.generate``)."""
