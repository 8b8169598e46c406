"""Huey with Redis doing the benchmark's per-file work."""

import os

from huey import RedisHuey
from work import process as do_process

huey = RedisHuey(
    "bench", url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"), results=False
)


@huey.task()
def process(source: str, out_dir: str) -> None:
    do_process(source, out_dir)
