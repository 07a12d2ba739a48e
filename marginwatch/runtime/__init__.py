"""What the worker and the executor processes share: the Celery app with its task and queue
names, a process's resources, serving metrics, supervised helper threads."""
