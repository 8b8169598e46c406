"""A scripted Runtime for tests of the supervisor and the pools: no process is started."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ondrop.runtime.base import RunResult, RunSpec, Runtime

Behaviour = Callable[[RunSpec], RunResult]


def succeed(spec: RunSpec) -> RunResult:
    """Copy the input file to the output folder, like `cp $INPUT_FILE_PATH $TMP_OUTPUT_DIR`."""
    source = spec.env.get("INPUT_FILE_PATH")
    if source:
        from pathlib import Path

        src = Path(source)
        (Path(spec.env["TMP_OUTPUT_DIR"]) / src.name).write_bytes(src.read_bytes())
    spec.log.write_text("copied\n")
    return RunResult(0, "", 0.0)


class FakeRuntime(Runtime):
    name = "fake"

    def __init__(self, behaviour: Behaviour = succeed) -> None:
        self.behaviour = behaviour
        self.calls: list[RunSpec] = []
        self._lock = threading.Lock()
        self.delay = 0.0

    def run(self, spec: RunSpec) -> RunResult:
        with self._lock:
            self.calls.append(spec)
        if self.delay:
            time.sleep(self.delay)
        return self.behaviour(spec)

    def stop(self, job_id: str) -> None:
        pass
