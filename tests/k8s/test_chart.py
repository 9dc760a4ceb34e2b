"""The Helm chart on a real API server: installed, upgraded and uninstalled with helm-python-sdk
(``jupyterhub.enabled=false``), then the advertising service runs with a token of the chart's
own ServiceAccount, whose rights are shown to be exactly what the service needs.

The z2jh dependency cannot be fetched here (no chart repository is reachable) and renders
nothing when disabled, so the chart is installed from a copy whose Chart.yaml lists no
dependency. The ServiceMonitor (a Prometheus-operator custom resource, whose definition a bare
control plane lacks) stays disabled; the offline chart tests check it. The control plane is the
module's own, with a node in the example's ``core`` node pool for the service's Deployment
(kwok nodes mount no volume: the example's Rucio password Secret need not exist).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from esap_spawner.dev.sim.cluster import node_manifest
from tests.harness.kube import start_control_plane
from tests.harness.service import TOKENS, StandaloneService
from tools.kube.control_plane import ControlPlane

helm = pytest.importorskip("helm_python")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "esap-jupyterhub"
NAMESPACE = "chart"
ACCOUNT = "esap-service"
PORTAL = {"Authorization": "token portal-token"}
# what any authenticated user may do (system:basic-user): not the chart's doing
SELF_REVIEWS = {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}


def chart_copy(folder: Path) -> Path:
    """The chart without its (disabled, not downloadable) z2jh dependency."""
    target = folder / "esap-jupyterhub"
    shutil.copytree(CHART, target)
    meta = yaml.safe_load((target / "Chart.yaml").read_text())
    meta.pop("dependencies")
    (target / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return target


def full_values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "examples" / "full-values.yaml").read_text())
    values["jupyterhub"] = {"enabled": False}
    values.setdefault("metrics", {}).setdefault("serviceMonitor", {})["enabled"] = False
    return dict(values)


def objects_of(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def path_of(obj: dict[str, Any]) -> str:
    """The API path of a manifest's object (the kinds the chart renders)."""
    group_version = obj["apiVersion"]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    plural = {"NetworkPolicy": "networkpolicies"}.get(obj["kind"], obj["kind"].lower() + "s")
    namespaced = obj["kind"] not in ("ClusterRole", "ClusterRoleBinding")
    where = f"/namespaces/{NAMESPACE}" if namespaced else ""
    return f"{base}{where}/{plural}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    plane = start_control_plane()
    try:
        pool = {"esap.escape.eu/node-pool": "core"}
        nodes = [node_manifest(f"core-{i}", labels=pool, allocatable={"cpu": "4", "memory": "16Gi"})
                 for i in range(2)]  # fmt: skip
        plane.register(nodes)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def release(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    """helm's Config on the control plane and the chart to install."""
    folder = tmp_path_factory.mktemp("chart")
    kubeconfig = control_plane.write_kubeconfig(folder / "kubeconfig")
    config = helm.Config(kubeconfig_path=str(kubeconfig), namespace=NAMESPACE)
    yield config, chart_copy(folder)
    config.uninstall("esap", ignore_not_found=True, wait="watcher", timeout=120)


def wait(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)
    return result


def service_account_token(plane: ControlPlane) -> str:
    """A token of the chart's ServiceAccount, as the kubelet would mount (TokenRequest)."""
    answer = plane.api.post(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{ACCOUNT}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}},
    )  # fmt: skip
    return str(answer["status"]["token"])


def token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    config = plane.kubeconfig()
    config["users"][0]["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def test_install_upgrade_and_uninstall(control_plane: ControlPlane, release: Any) -> None:
    config, chart = release
    installed = config.install(
        str(chart), "esap", full_values(), namespace=NAMESPACE, create_namespace=True,
        wait="watcher", timeout=120,
    )  # fmt: skip
    assert installed["status"] == "deployed", installed
    objects = objects_of(config.status("esap")["manifest"])
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "ClusterRole",
            "ClusterRoleBinding", "Role", "RoleBinding", "NetworkPolicy"} <= kinds  # fmt: skip
    for obj in objects:  # every manifest was accepted and stored
        assert control_plane.api.answers(path_of(obj)), path_of(obj)
    deployment = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/esap-service"
    assert control_plane.api.get(deployment)["status"]["readyReplicas"] == 1

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["jupyterhub"] = {"enabled": False}
    values["service"]["replicas"] = 2
    upgraded = config.upgrade(
        str(chart), "esap", values, namespace=NAMESPACE, wait="watcher", timeout=120
    )
    assert (upgraded["status"], upgraded["revision"]) == ("deployed", 2)
    assert control_plane.api.get(deployment)["status"]["readyReplicas"] == 2
    site = control_plane.api.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/esap-site")
    assert [p["slug"] for p in yaml.safe_load(site["data"]["site.yaml"])["profiles"]] == ["small"]


def test_the_service_runs_with_the_charts_service_account(
    control_plane: ControlPlane, release: Any, tmp_path: Path
) -> None:
    token = service_account_token(control_plane)
    kubeconfig = token_kubeconfig(control_plane, token, tmp_path / "kubeconfig")
    site = control_plane.api.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/esap-site")
    service = StandaloneService(
        tmp_path, f"--ClusterWatcher.namespace={NAMESPACE}", "--db-url=",
        site_text=site["data"]["site.yaml"], tokens=TOKENS, kubeconfig=str(kubeconfig),
    )  # fmt: skip
    try:

        def synced() -> dict[str, Any] | None:
            answer = requests.get(service.base + "api/v1/profiles", headers=PORTAL, timeout=10)
            body = answer.json()
            available = body["profiles"][0]["availability"]
            return body if answer.ok and available["status"] != "unknown" else None

        body = wait(synced, "the service's view of the cluster")
        assert body["stale"] is False
        small = body["profiles"][0]["availability"]
        assert small["can_start_now"] > 1
        # its view follows the namespace's quota too (the chart's Role lets it read them)
        control_plane.api.post(
            f"/api/v1/namespaces/{NAMESPACE}/resourcequotas",
            {"metadata": {"name": "servers"}, "spec": {"hard": {"pods": "3"}}},
        )
        wait(
            lambda: (
                (synced() or {"profiles": [{"availability": {}}]})["profiles"][0][
                    "availability"
                ].get("can_start_now")
                == 1
            ),  # the two service replicas use two of the three pods
            "the quota in the service's answer",
        )
        assert requests.get(service.base + "health", timeout=10).status_code == 200
    finally:
        control_plane.api.request(
            "DELETE", f"/api/v1/namespaces/{NAMESPACE}/resourcequotas/servers"
        )
        service.stop()
    assert "cannot read ResourceQuotas" not in service.log_path.read_text()


def allowed_rules(plane: ControlPlane, token: str, namespace: str) -> set[tuple[str, str, str]]:
    """``(group, resource, verb)`` the token may use in ``namespace`` (its own review of
    itself), without what every authenticated user may do."""
    review = requests.post(
        f"{plane.api_url}/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        json={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
              "spec": {"namespace": namespace}},
        headers={"Authorization": f"Bearer {token}"}, verify=str(plane.ca.cert), timeout=10,
    )  # fmt: skip
    assert review.status_code == 201, review.text
    found = set()
    for rule in review.json()["status"]["resourceRules"]:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                if resource not in SELF_REVIEWS:
                    found |= {(group, resource, verb) for verb in rule["verbs"]}
    return found


def test_the_service_account_may_do_exactly_what_the_service_needs(
    control_plane: ControlPlane, release: Any
) -> None:
    token = service_account_token(control_plane)
    needed = {("", r, v) for r in ("nodes", "pods") for v in ("list", "watch")}
    quotas = {("", "resourcequotas", v) for v in ("list", "watch")}
    assert allowed_rules(control_plane, token, NAMESPACE) == needed | quotas
    assert allowed_rules(control_plane, token, "default") == needed

    def status(method: str, path: str, body: Any = None) -> int:
        answer = requests.request(
            method, control_plane.api_url + path, json=body, timeout=10,
            headers={"Authorization": f"Bearer {token}"}, verify=str(control_plane.ca.cert),
        )  # fmt: skip
        return answer.status_code

    assert status("GET", "/api/v1/nodes") == 200
    assert status("GET", "/api/v1/pods") == 200
    assert status("GET", f"/api/v1/namespaces/{NAMESPACE}/resourcequotas") == 200
    refused = [
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets"),
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/esap-tokens"),
        ("GET", "/api/v1/secrets"),
        ("POST", f"/api/v1/namespaces/{NAMESPACE}/pods"),
        ("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/anything"),
        ("GET", "/api/v1/nodes/core-0"),  # listing is all it needs, not get
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/esap-site"),
        ("GET", "/api/v1/namespaces/default/resourcequotas"),
        ("PATCH", "/api/v1/nodes/core-0"),
    ]
    pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    for method, path in refused:
        assert status(method, path, pod if method == "POST" else None) == 403, (method, path)


def test_uninstall_leaves_nothing(control_plane: ControlPlane, release: Any) -> None:
    config, _ = release
    objects = objects_of(config.status("esap")["manifest"])
    config.uninstall("esap", wait="watcher", timeout=120)
    for obj in objects:
        wait(lambda o=obj: not control_plane.api.answers(path_of(o)), f"{path_of(obj)} to go")
