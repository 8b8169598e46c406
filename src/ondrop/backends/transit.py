"""Transit: how what the control plane holds on its own disk (an invocation's body, a /run
job's outputs for the waiting client) reaches a node on another machine and back, through
a storage provider both reach (the bundled object store), never through a shared disk.

Each attempt has its own prefix, `ondrop-transit/<job>/<attempt>/`: `in/<name>` for its
body, `results/output/...` and `results/log` for what a /run client gets. The control plane
copies them in before the job is handed over and out once its report has come, then
deletes them; the durable copies stay on the control plane (payloads, results folder).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from ondrop.errors import DefinitionError
from ondrop.events.base import HTTP_SOURCE
from ondrop.events.payloads import Payloads
from ondrop.jobs import JobSpec, ObjectRef, Staged
from ondrop.storage.base import StorageProvider, check_key, join_key

log = logging.getLogger(__name__)

BUCKET = "ondrop-transit"


class Transit:
    def __init__(self, provider: StorageProvider | None, payloads: Payloads, results: Path) -> None:
        """`provider`: one the nodes reach (None: there is none, and jobs that need one
        fail saying so)."""
        self.provider = provider
        self.payloads = payloads
        self.results = results
        self._made = False

    def prefix(self, spec: JobSpec) -> str:
        return f"{BUCKET}/{spec.job_id}/{spec.attempt}"

    def send(self, spec: JobSpec) -> JobSpec:
        """The spec as a node on another machine runs it: its body copied in, its /run
        results sent back through the provider."""
        bodies = [s for s in spec.inputs if s.ref.provider == HTTP_SOURCE]
        if not bodies and not spec.keep_results:
            return spec
        provider = self._provider()
        prefix = self.prefix(spec)
        inputs = []
        for staged in spec.inputs:
            if staged.ref.provider == HTTP_SOURCE:
                key = join_key(prefix, f"in/{check_key(Path(staged.name).name)}")
                provider.put_file(key, self.payloads.path(staged.ref.key))
                staged = Staged(ObjectRef(provider.name, key), staged.name)
            inputs.append(staged)
        results = ObjectRef(provider.name, f"{prefix}/results") if spec.keep_results else None
        return dataclasses.replace(spec, inputs=tuple(inputs), results_to=results)

    def receive(self, spec: JobSpec, succeeded: bool) -> None:
        """After the report: a /run job's results into the results folder (where the
        waiting client's answer is read), and the attempt's transit objects deleted."""
        carried = spec.results_to is not None or any(
            s.ref.key.startswith(f"{BUCKET}/") for s in spec.inputs
        )
        if self.provider is None or not carried:
            return
        prefix = self.prefix(spec)
        keys = [info.key for info in self.provider.list(prefix)]
        if succeeded and spec.results_to is not None:
            keep = self.results / spec.job_id
            shutil.rmtree(keep, ignore_errors=True)
            (keep / "output").mkdir(parents=True)
            results = f"{spec.results_to.key}/"
            for key in keys:
                if key.startswith(results):
                    self.provider.get(key, keep / key.removeprefix(results))
        for key in keys:
            try:
                self.provider.delete(key)
            except Exception as exc:  # left for the next clean-up; it names one attempt
                log.warning("cannot delete %s from %s: %s", key, self.provider.name, exc)

    def _provider(self) -> StorageProvider:
        if self.provider is None:
            raise DefinitionError(
                "this job carries an invocation's body or a /run client waits for it, and "
                "its node is on a cluster: start ondrop with `--object-store seaweedfs` (an "
                "object store the nodes reach) for such jobs to run there"
            )
        if not self._made:
            self.provider.ensure_folder(f"{BUCKET}/in")
            self._made = True
        return self.provider
