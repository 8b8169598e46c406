"""Celery with a Redis broker doing the benchmark's per-file work."""

import os

from celery import Celery
from work import process as do_process

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True, worker_prefetch_multiplier=4, broker_connection_retry_on_startup=True
)


@app.task(name="process")
def process(source: str, out_dir: str) -> None:
    do_process(source, out_dir)
