"""A real Kubernetes control plane on 127.0.0.1 for tests, benchmarks and people.

``tools/kube-up`` is the command; :class:`tools.kube.control_plane.ControlPlane` is the same thing
as a Python object (the k8s test tier and the benchmarks start it in-process, to restart the API
server or compact etcd). The binaries come from ``tools/build-kube``. Nothing here is part of the
product package.
"""
