"""A node that runs another ondrop than the control plane refuses its jobs, naming both
versions and what to do, rather than running them with another supervisor."""

from __future__ import annotations

import ondrop
from ondrop.backends.ray import NodeSupervisor, _same_version
from ondrop.jobs import Cause, Report


def test_a_node_of_another_version_refuses_jobs_naming_both(ray_installed: None) -> None:
    assert _same_version(ondrop.__version__) is None
    problem = _same_version("9.9.9")
    assert problem is not None
    assert f"runs ondrop {ondrop.__version__} and the control plane 9.9.9" in problem
    assert "install the same version on every node" in problem
    supervisor = NodeSupervisor(relay=None, version="9.9.9")
    report = Report.from_json(supervisor.run({"job_id": "j", "attempt": 3}, {}))
    assert (report.job_id, report.attempt, report.outcome.cause) == ("j", 3, Cause.INTERNAL)
    assert report.outcome.reason == problem
