"""A Kubernetes API simulator: core/v1 over HTTP with a scheduler and a kubelet.

What KubeSpawner, the capacity watcher, the demo and the benchmarks run on when there is
no cluster. The real kubernetes_asyncio client and the real KubeSpawner talk to it unchanged.

Python::

    sim = Simulator(cluster="cluster.yaml", kubelet="process", delays=KubeletDelays(pull=0.1))
    await sim.start()                      # 127.0.0.1, a free port; sim.url
    sim.write_kubeconfig("kubeconfig.yaml")
    sim.faults.fail_next(3, 503)           # also: set_latency, close_watches, compact,
                                           # node_not_ready, remove_node, clear
    await sim.stop()                       # stops every pod process, removes the work folder

    with SimulatorThread(cluster_dict, kubelet="fake") as sim:   # its own loop and thread
        sim.add_node("gpu-1", allocatable={"cpu": "8", "nvidia.com/gpu": "1"})

Command line: ``esap-spawner sim --cluster FILE --kubeconfig OUT [--port N]
[--kubelet fake|process]``. Test fixtures: ``tests/harness/sim.py``.

Modules: ``store`` (objects, resourceVersions, change log, garbage collection),
``apiserver`` (HTTP), ``scheduler`` (placement with :mod:`esap_spawner.capacity.placement`),
``kubelet`` (fake and process modes; ``volumes``, ``podroot``, ``podenv``, ``podrun`` and
``processes`` for the process kubelet), ``cluster`` (YAML fixtures), ``faults``.

Every pod and node address is on loopback: in fake mode a random 127.A.0.0/16 per simulator
(nothing listens there), in process mode a random 127.A.B.0/24 per simulator where each pod
runs on its own address (``processes.IPAllocator``; docs/simulator.md has the plan of
127.0.0.0/8). Addresses in the pod spec are not rewritten (only paths are, see below), so a
single-user server must listen on its pod IP: ``c.KubeSpawner.ip = "$(POD_IP)"`` with
``c.KubeSpawner.environment = {"POD_IP": {"valueFrom": {"fieldRef": {"fieldPath":
"status.podIP"}}}}``. KubeSpawner's default ``ip`` 0.0.0.0 binds every loopback address, so a
second server on the same port fails.

Volumes in process mode: each pod gets a root folder holding the image's home and its volume
mounts (hostPath, emptyDir, configMap, secret, downwardAPI, projected, persistentVolumeClaim;
NFS/CSI through ``Simulator(volume_paths=...)``), and absolute paths under a mount or the home
in argv and env are translated into it: see ``volumes`` and ``podroot``.
"""

from __future__ import annotations

from esap_spawner.dev.sim.cluster import (
    Cluster,
    ClusterError,
    cluster_from_dict,
    load_cluster,
    node_manifest,
    pod_manifest,
)
from esap_spawner.dev.sim.kubelet import KubeletDelays
from esap_spawner.dev.sim.simulator import Simulator, SimulatorThread

__all__ = [
    "Cluster",
    "ClusterError",
    "KubeletDelays",
    "Simulator",
    "SimulatorThread",
    "cluster_from_dict",
    "load_cluster",
    "node_manifest",
    "pod_manifest",
]
