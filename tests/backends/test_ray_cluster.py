"""The Ray cluster the backend tests run on is real and on loopback: tasks land on the node
they ask for, a GPU request lands on the GPU node with CUDA_VISIBLE_DEVICES set, and a node
killed as if its machine were lost is reported dead."""

from __future__ import annotations

from tests.support.ray_cluster import Node, RayCluster, TaskSpec


def test_a_task_pinned_to_each_worker_node_runs_on_that_node(
    ray_cluster: RayCluster, gpu_node: Node, cpu_node: Node
) -> None:
    reports = ray_cluster.run_tasks([TaskSpec.on(gpu_node.ip), TaskSpec.on(cpu_node.ip)])

    assert [report.ip for report in reports] == [gpu_node.ip, cpu_node.ip]
    assert reports[0].node_id != reports[1].node_id


def test_every_node_is_on_its_own_loopback_address_with_its_own_ports(
    ray_cluster: RayCluster,
) -> None:
    alive = {s.node_manager_address for s in ray_cluster.states() if s.alive}

    assert {n.node_manager_address for n in ray_cluster.nodes} <= alive
    ips = [n.ip for n in ray_cluster.nodes]
    assert ips[0] == "127.0.0.2" and len(set(ips)) == len(ips)
    assert all(ip.startswith("127.0.0.") and ip != "127.0.0.1" for ip in ips)
    assert ray_cluster.address == f"127.0.0.2:{ray_cluster.head.ports.gcs}"


def test_a_task_asking_for_a_gpu_lands_on_the_gpu_node_and_sees_cuda_visible_devices(
    ray_cluster: RayCluster, gpu_node: Node
) -> None:
    (report,) = ray_cluster.run_tasks([TaskSpec(num_cpus=1, num_gpus=1)])

    assert report.ip == gpu_node.ip
    assert report.gpu_ids == [0]
    assert report.cuda_visible_devices == "0"


def test_a_killed_node_loses_every_process_and_the_cluster_reports_it_dead(
    ray_cluster: RayCluster,
) -> None:
    node = ray_cluster.add_node(num_cpus=1)
    (report,) = ray_cluster.run_tasks([TaskSpec.on(node.ip)])
    assert report.ip == node.ip and node.pids()

    node.kill()

    assert node.pids() == []
    states = ray_cluster.wait_for_nodes(
        lambda states: any(
            s.node_manager_address == node.node_manager_address and not s.alive for s in states
        ),
        what=f"{node.ip} reported dead",
    )
    others = {n.node_manager_address for n in ray_cluster.nodes if n is not node}
    assert others <= {s.node_manager_address for s in states if s.alive}
