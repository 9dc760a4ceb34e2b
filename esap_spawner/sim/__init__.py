"""A Kubernetes API simulator: core/v1 over HTTP with a scheduler and a kubelet.

What KubeSpawner, the capacity watcher, the demo and the benchmarks run on when there is
no cluster. Start one with :class:`Simulator` (on the current loop) or
:class:`SimulatorThread` (in a background thread), or ``esap-spawner sim``.
"""

from __future__ import annotations

from .cluster import (
    Cluster,
    ClusterError,
    cluster_from_dict,
    load_cluster,
    node_manifest,
    pod_manifest,
)
from .kubelet import KubeletDelays
from .simulator import Simulator, SimulatorThread

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
