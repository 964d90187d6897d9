"""GenieVM worker: Celery tasks that run the same jobs the CLI runs, on many hosts."""
