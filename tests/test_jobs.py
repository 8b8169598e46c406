"""The values that cross machines survive JSON: a JobSpec and a Report read back from their
JSON are the ones written, secrets and causes included."""

from __future__ import annotations

import json

from ondrop.events.base import invoke_event, object_event
from ondrop.fdl.models import Service
from ondrop.jobs import Cause, JobSpec, ObjectRef, Report, Resources, Staged
from ondrop.storage.base import ObjectInfo
from ondrop.store.base import FAILED, Outcome


def test_a_job_spec_comes_back_from_json_as_it_was() -> None:
    service = Service.model_validate(
        {
            "name": "s",
            "script": "#!/bin/sh\necho hi\n",
            "gpu": 1,
            "environment": {"variables": {"A": "1"}, "secrets": {"KEY": "s3cret"}},
            "input": [{"storage_provider": "minio.default", "path": "b/in"}],
        }
    )
    for event in (object_event("minio.default", "b/in/x.png", "v1", 3), invoke_event("p", 4)):
        spec = JobSpec(
            job_id="j",
            attempt=2,
            pool="batch",
            service=service,
            event=event,
            resources=Resources(timeout=30.0, memory=1 << 20, cpu=0.5, gpus=1),
            inputs=(Staged(ObjectRef("minio.default", "b/in/x.png"), "x.png"),),
            manifest={"jobs": [{"id": "a", "files": ["f"]}]},
            manifest_name="x.png.json",
            keep_results=True,
            results_to=ObjectRef("minio.default", "ondrop-transit/j/2/results"),
        )
        again = JobSpec.from_json(json.loads(json.dumps(spec.to_json())))
        assert again == spec
        assert again.service.environment.secrets == {"KEY": "s3cret"}


def test_a_report_comes_back_from_json_with_its_cause_and_outputs() -> None:
    outcome = Outcome(FAILED, 137, "out of memory", "log", Cause.OOM, node="127.0.0.3")
    report = Report("j", 1, outcome, (("minio.default", ObjectInfo("b/o", 3, "e", 1.5)),))
    again = Report.from_json(json.loads(json.dumps(report.to_json())))
    assert again == report and again.outcome.cause is Cause.OOM
