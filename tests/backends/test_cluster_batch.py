"""The batch pool's admission on a cluster: a `gpu_optional` job asks Ray for a GPU only
when the cluster has one (else it would wait for ever); a job no node can run now is
applied with a warning that says what it waits for."""

from __future__ import annotations

from typing import Any, cast

from ondrop.backends.ray import ClusterBatch, RayCluster
from ondrop.fdl.models import Service
from ondrop.store.base import Job


class Cluster:
    def __init__(self, gpus: float, nodes: list[dict[str, float]]) -> None:
        self.gpus, self.nodes = gpus, nodes

    def totals(self) -> tuple[dict[str, float], dict[str, float]]:
        return {"CPU": 4.0, "GPU": self.gpus}, {"CPU": 4.0, "GPU": self.gpus}

    def resources(self) -> list[dict[str, float]]:
        return self.nodes


def admission(gpus: float, nodes: list[dict[str, float]] | None = None) -> ClusterBatch:
    return ClusterBatch(cast(RayCluster, Cluster(gpus, nodes or [])))


def service(**fields: Any) -> Service:
    return Service.model_validate({"name": "s", "script": "true", "mode": "batch", **fields})


JOB = Job("j", "s", 1, "queued", 0, 0.0, pool="batch")


def test_a_gpu_optional_job_asks_for_a_gpu_only_where_the_cluster_has_one() -> None:
    optional = service(gpu=1, gpu_optional=True)
    with_gpu = admission(gpus=1).admit(JOB, optional)
    without = admission(gpus=0).admit(JOB, optional)
    assert with_gpu is not None and with_gpu.gpu_total == 1
    assert without is not None and without.gpu_total == 0
    needed = admission(gpus=0).admit(JOB, service(gpu=1))
    assert needed is not None and needed.gpu_total == 1  # it waits for a GPU node


def test_a_job_no_node_fits_now_is_applied_with_what_it_waits_for() -> None:
    small = [{"CPU": 2.0, "memory": 8e9}]
    assert admission(0, small).fits(service(cpu="2")) is None
    warning = admission(0, small).fits(service(cpu="8"))
    assert warning is not None and "8 CPUs" in warning and "autoscaler" in warning
    assert admission(0, small).fits(service(gpu=1, gpu_optional=True)) is None
    assert admission(0, small).fits(service(gpu=1)) is not None
