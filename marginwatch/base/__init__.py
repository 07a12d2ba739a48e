"""Foundations without I/O: settings, Redis key names, the tick and action contracts, pool
names, the snapshot and report documents, metric definitions, exit statuses."""
