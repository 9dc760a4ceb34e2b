"""The esap-jupyterhub chart, rendered offline and checked.

helm-python-sdk renders the chart's own templates (the zero-to-jupyterhub dependency is
disabled: it cannot be downloaded here), kubernetes-validate checks every manifest against
the Kubernetes 1.30 schemas, and the values schema is exercised with bad values. The site
file the chart renders is checked by ``esap-spawner check-config``, and the hub's values
(`jupyterhub.hub.*`) are checked to point at objects the chart really renders.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import requests
import yaml
from jsonschema import Draft7Validator

from tests.harness.helm import CHART, REPO, generator, render

helm = pytest.importorskip("helm_python")

FULL_VALUES = CHART / "examples" / "full-values.yaml"
KUBE_VERSION = "1.30"
# custom resources kubernetes-validate has no schema for: checked by hand below
CRD_KINDS = {"ServiceMonitor"}


def notes(values: dict[str, Any] | None = None) -> str:
    values = copy.deepcopy(values or {})
    values.setdefault("jupyterhub", {})["enabled"] = False
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="esap", namespace="jhub")
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def full_values() -> dict[str, Any]:
    return dict(yaml.safe_load(FULL_VALUES.read_text()))


def default_values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


@pytest.fixture(scope="module")
def default_objects() -> dict[Any, Any]:
    return render()


@pytest.fixture(scope="module")
def full_objects() -> dict[Any, Any]:
    return render(full_values())


# -- the schema ------------------------------------------------------------------------


def test_committed_generated_files_are_fresh() -> None:
    stale = generator().stale_files()
    assert stale == [], f"stale: {stale}; run python helm/generate_schema.py"


def test_esap_schema_is_the_site_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    site = json.loads((REPO / "esap_spawner" / "site" / "site.schema.json").read_text())
    esap = schema["properties"]["esap"]
    assert set(esap["properties"]) == set(site["properties"])
    assert esap["required"] == site["required"]
    for name in site["$defs"]:
        assert f"site-{name}" in schema["definitions"]
    text = json.dumps(schema)
    assert '"#/$defs/' not in text  # every reference relocated


def _walk(node: Any, path: str, problems: list[str]) -> None:
    if not isinstance(node, dict):
        return
    props = node.get("properties", {})
    if (
        props
        and node.get("additionalProperties") is not False
        and path
        not in (
            "jupyterhub",
            "global",
        )
    ):
        problems.append(f"{path or '<root>'}: additionalProperties is not false")
    for key, sub in props.items():
        child = f"{path}.{key}" if path else key
        if "description" not in sub:
            problems.append(f"{child}: no description")
        _walk(sub, child, problems)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", problems)


def test_every_key_is_described_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    problems: list[str] = []
    _walk(schema, "", problems)
    for name, definition in schema.get("definitions", {}).items():
        _walk(definition, f"definitions.{name}", problems)
    assert problems == []


def test_generator_refuses_an_unrelocatable_reference() -> None:
    gen = generator()
    chart_schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    site = {"type": "object", "properties": {"x": {"$ref": "other.json#/a"}}}
    with pytest.raises(ValueError, match=r"other\.json#/a"):
        gen.values_schema(chart_schema, site)


@pytest.mark.parametrize(
    ("values", "path", "words"),
    [
        ({"esap": {"colour": "red"}}, "/esap", "'colour' not allowed"),
        (
            {"esap": {"profiles": [{"slug": "Big GPU"}]}},
            "/esap/profiles/0/slug",
            "does not match pattern",
        ),
        (
            {"esap": {"profiles": [{"slug": "ok", "cpu": {"cores": 2}}]}},
            "/esap/profiles/0/cpu",
            "'cores'",
        ),
        (
            {"esap": {"facility": {"name": "x" * 31, "url": "https://h/"}}},
            "/esap/facility/name",
            "31",
        ),
        ({"servise": {}}, "at ''", "'servise' not allowed"),
        ({"service": {"replicas": "two"}}, "/service/replicas", "want integer"),
        (
            {"metrics": {"serviceMonitor": {"interval": "often"}}},
            "/metrics/serviceMonitor/interval",
            "pattern",
        ),
    ],
)
def test_bad_values_are_refused_with_their_path(
    values: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as exc:
        render(values)
    message = str(exc.value)
    assert path in message
    assert words in message
    # a draft-07 validator (Helm 3 before 3.18 uses one) refuses them too, at the same path
    merged = helm_merge(default_values(), {**values, "jupyterhub": {"enabled": False}})
    errors = Draft7Validator(values_schema()).iter_errors(merged)
    pointers = {"/" + "/".join(map(str, e.absolute_path)) for e in errors}
    assert (path if path.startswith("/") else "/") in pointers, pointers


# -- every supported Helm enforces the same schema ---------------------------------------


def helm_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Values as Helm coalesces them: maps merge key by key, anything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def values_schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def schema_keywords(node: Any) -> set[str]:
    """The keywords used anywhere a schema stands (not property names, not data)."""
    if not isinstance(node, dict):
        return set()
    found = set(node)
    for key in ("properties", "definitions", "$defs", "patternProperties"):
        for sub in node.get(key, {}).values():
            found |= schema_keywords(sub)
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains"):
        found |= schema_keywords(node.get(key))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, []):
            found |= schema_keywords(sub)
    return found


def test_the_values_schema_is_draft_07_which_every_helm_enforces() -> None:
    """Helm 3 before 3.18 validates values with gojsonschema (drafts 4, 6 and 7); Helm 3.18+
    and Helm 4 with santhosh-tekuri/jsonschema, which reads the draft a schema names. A
    draft-07 schema using draft-07 keywords only is enforced alike by all of them. Helm 4
    itself renders every other test here (helm-python-sdk); for Helm 3 this checks the
    schema with an independent draft-07 implementation."""
    schema = values_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(schema)
    unknown = schema_keywords(schema) - set(Draft7Validator.VALIDATORS) - {
        "$schema", "title", "description", "default", "definitions", "$comment", "examples",
        "x-generated-from",
    }  # fmt: skip
    assert unknown == set(), f"keywords draft-07 does not know: {unknown}"
    for overlay in ({}, full_values()):
        values = helm_merge(default_values(), {**overlay, "jupyterhub": {"enabled": False}})
        assert list(Draft7Validator(schema).iter_errors(values)) == []


# -- the rendered manifests ------------------------------------------------------------


def _validate_all(objects: dict[Any, Any]) -> None:
    for (kind, name), manifest in objects.items():
        if kind in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the failure
            pytest.fail(f"{kind}/{name}: {exc}")


def test_default_values_render_valid_manifests(default_objects: dict[Any, Any]) -> None:
    kinds = sorted({kind for kind, _ in default_objects})
    assert kinds == sorted(
        {
            "ConfigMap",
            "Secret",
            "Deployment",
            "Service",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "NetworkPolicy",
        }
    )
    _validate_all(default_objects)


def test_full_example_renders_valid_manifests(full_objects: dict[Any, Any]) -> None:
    _validate_all(full_objects)
    monitor = full_objects[("ServiceMonitor", "esap-service")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/services/esap/metrics"
    assert endpoint["authorization"]["credentials"] == {
        "name": "esap-tokens",
        "key": "prometheus-api-token",
    }
    service = full_objects[("Service", "esap-service")]
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_kubernetes_validate_catches_a_broken_manifest(default_objects: dict[Any, Any]) -> None:
    # guard against a validator that accepts anything
    broken = copy.deepcopy(default_objects[("Deployment", "esap-service")])
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_site_file_in_configmap_passes_check_config(
    full_objects: dict[Any, Any], tmp_path: Path
) -> None:
    site_text = full_objects[("ConfigMap", "esap-site")]["data"]["site.yaml"]
    assert yaml.safe_load(site_text) == full_values()["esap"]
    site = tmp_path / "site.yaml"
    site.write_text(site_text)
    result = subprocess.run(
        [sys.executable, "-m", "esap_spawner.cli", "check-config", str(site)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_default_site_file_passes_check_config(
    default_objects: dict[Any, Any], tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(default_objects[("ConfigMap", "esap-site")]["data"]["site.yaml"])
    result = subprocess.run(
        [sys.executable, "-m", "esap_spawner.cli", "check-config", str(site)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_service_pod_is_locked_down(default_objects: dict[Any, Any]) -> None:
    pod = default_objects[("Deployment", "esap-service")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/services/esap/health"
    # a backend outage must not restart the pod: liveness only checks the port
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe] == {**container[probe], "tcpSocket": {"port": "http"}}
    assert "--site-file=/etc/esap/site.yaml" in container["command"]
    assert "--prefix=/services/esap/" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "esap-tokens",
        "key": "service-api-token",
    }
    assert "limits" in container["resources"]
    labels = default_objects[("Deployment", "esap-service")]["spec"]["template"]["metadata"]
    assert labels["labels"]["hub.jupyter.org/network-access-hub"] == "true"


def test_tokens_are_generated_and_distinct(default_objects: dict[Any, Any]) -> None:
    data = default_objects[("Secret", "esap-tokens")]["data"]
    assert set(data) == {"service-api-token", "portal-api-token", "prometheus-api-token"}
    tokens = [base64.b64decode(v).decode() for v in data.values()]
    assert all(len(t) == 64 and t.isalnum() for t in tokens)
    assert len(set(tokens)) == 3


def test_tokens_secret_can_be_left_to_the_admin() -> None:
    objects = render({"tokens": {"create": False}})
    assert ("Secret", "esap-tokens") not in objects
    # the service still reads its token from the Secret the admin creates
    pod = objects[("Deployment", "esap-service")]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "esap-tokens"


def test_rbac_reads_nodes_and_pods_only(default_objects: dict[Any, Any]) -> None:
    role = default_objects[("ClusterRole", "jhub-esap-cluster-reader")]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]}
    ]
    binding = default_objects[("ClusterRoleBinding", "jhub-esap-cluster-reader")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "esap-service", "namespace": "jhub"},
        {"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"},
    ]
    # the quotas of the namespace, for the service and the hub
    quotas = default_objects[("Role", "jhub-esap-cluster-reader-quotas")]
    assert quotas["rules"] == [
        {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["list", "watch"]}
    ]
    quota_binding = default_objects[("RoleBinding", "jhub-esap-cluster-reader-quotas")]
    assert quota_binding["subjects"] == binding["subjects"]
    # namespaced, for the hub only: the ConfigMap each pod gets with its dataset plan, and
    # the owner set on its token Secret (z2jh's hub Role creates and deletes secrets)
    roles = [name for kind, name in default_objects if kind == "Role" and "quotas" not in name]
    assert roles == ["jhub-esap-cluster-reader-hub-data"]
    assert default_objects[("Role", roles[0])]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "create", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch"]},
    ]
    hub_binding = default_objects[("RoleBinding", roles[0])]
    assert hub_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}
    ]


def test_rbac_and_netpol_can_be_turned_off() -> None:
    objects = render({"rbac": {"create": False}, "networkPolicy": {"enabled": False}})
    kinds = {kind for kind, _ in objects}
    assert kinds.isdisjoint(
        {
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "NetworkPolicy",
        }
    )
    pod = objects[("Deployment", "esap-service")]["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod


def test_network_policy_admits_hub_proxy_and_prometheus(full_objects: dict[Any, Any]) -> None:
    policy = full_objects[("NetworkPolicy", "esap-service")]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    pods, namespace = rule["from"]
    exprs = {e["key"]: e["values"] for e in pods["podSelector"]["matchExpressions"]}
    assert exprs == {"app": ["jupyterhub"], "release": ["esap"], "component": ["hub", "proxy"]}
    assert namespace == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }


def test_dashboard_configmap_follows_the_docs_copy(default_objects: dict[Any, Any]) -> None:
    copy_path = CHART / "files" / "grafana-dashboard.json"
    key = ("ConfigMap", "esap-grafana-dashboard")
    if not copy_path.exists():
        assert key not in default_objects
        return
    dashboard = default_objects[key]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["esap-spawner.json"]) == json.loads(copy_path.read_text())
    off = render({"metrics": {"dashboard": {"enabled": False}}})
    assert key not in off


def test_hub_values_point_at_rendered_objects(full_objects: dict[Any, Any]) -> None:
    """The static `jupyterhub.hub` values name this chart's objects: check they exist."""
    for values in (default_values(), full_values()):
        hub = values["jupyterhub"]["hub"]
        env = hub["extraEnv"]
        secret = full_objects[("Secret", "esap-tokens")]
        for name in (
            "ESAP_SERVICE_API_TOKEN",
            "ESAP_PORTAL_API_TOKEN",
            "ESAP_PROMETHEUS_API_TOKEN",
        ):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["data"]
        service = full_objects[("Service", "esap-service")]
        (port,) = service["spec"]["ports"]
        assert env["ESAP_SERVICE_URL"] == f"http://{service['metadata']['name']}:{port['port']}"
        volumes = {v["name"]: v for v in hub["extraVolumes"]}
        mounts = {m["name"]: m for m in hub["extraVolumeMounts"]}
        assert volumes["esap-site"]["configMap"]["name"] == "esap-site"
        assert env["ESAP_SITE_FILE"] == mounts["esap-site"]["mountPath"] + "/site.yaml"
        assert mounts["esap-site"]["mountPath"] == values.get("siteFile", {}).get(
            "mountPath", "/etc/esap"
        )
    # the Rucio password file the site names is mounted in both the hub and the service
    values = full_values()
    password_dir = str(Path(values["esap"]["data"]["rucio"]["password_file"]).parent)
    hub_mounts = [m["mountPath"] for m in values["jupyterhub"]["hub"]["extraVolumeMounts"]]
    pod = full_objects[("Deployment", "esap-service")]["spec"]["template"]["spec"]
    service_mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
    assert password_dir in hub_mounts
    assert password_dir in service_mounts


def test_chart_metadata_is_complete() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={KUBE_VERSION}.0-0"  # the schemas manifests are checked on
    assert chart["home"].startswith("https://")
    assert chart["sources"] and all(s.startswith("https://") for s in chart["sources"])
    assert all(m["name"] for m in chart["maintainers"])
    from esap_spawner import __version__

    assert chart["appVersion"] == __version__
    with helm.Chart.load(CHART) as loaded:  # Helm itself accepts the metadata
        rendered = loaded.render({"jupyterhub": {"enabled": False}}, name="esap", namespace="x")
    assert rendered


def test_chart_declares_z2jh_dependency_with_condition() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    (dep,) = chart["dependencies"]
    assert dep["name"] == "jupyterhub"
    assert dep["condition"] == "jupyterhub.enabled"
    assert dep["repository"].startswith("https://")
    dockerfile = (CHART / "images" / "hub" / "Dockerfile").read_text()
    assert f"ARG Z2JH_VERSION={dep['version']}" in dockerfile


def test_lint_has_no_errors() -> None:
    result = helm.lint(CHART, {"jupyterhub": {"enabled": False}})
    errors = [m for m in result["messages"] if m["severity"] >= 2]
    # the only warning allowed: the z2jh dependency is not downloaded here
    assert [m["error"] for m in errors] == [
        "chart directory is missing these dependencies: jupyterhub"
    ]


def test_notes_tell_how_to_get_the_portal_token() -> None:
    text = notes()
    assert "portal-api-token" in text
    assert "https://hub.example.org/services/esap/api/v1/facility" in text


# -- the rendered chart, run: service + hub with the snippets ----------------------------


def _secret_value(secret: dict[str, Any], ref: dict[str, Any]) -> str:
    assert ref["name"] == secret["metadata"]["name"]
    return base64.b64decode(secret["data"][ref["key"]]).decode()


@pytest.mark.integration
def test_rendered_chart_runs_a_hub_that_advertises_its_profiles(tmp_path: Path) -> None:
    """What `helm install` sets up, run locally: the service from the Deployment's command
    and env, the hub from the image's snippets and `jupyterhub.hub.extraEnv`, the site file
    and tokens from the rendered ConfigMap and Secret. ESAP's token then reads the profiles
    through the hub's proxy."""
    from tests.harness.hub import HubProcess, free_port
    from tests.harness.snippets import LOAD_SNIPPETS

    values = full_values()
    values["esap"]["data"] = {"catalogue": "none"}  # no Rucio server in this test
    objects = render(values)
    secret = objects[("Secret", "esap-tokens")]
    site = tmp_path / "site.yaml"
    site.write_text(objects[("ConfigMap", "esap-site")]["data"]["site.yaml"])
    no_cluster = str(tmp_path / "no-kubeconfig")

    # the hub: extraEnv with secretKeyRefs resolved, paths and addresses made local
    service_port = free_port()
    hub_env: dict[str, str] = {"KUBECONFIG": no_cluster}
    for name, value in values["jupyterhub"]["hub"]["extraEnv"].items():
        if isinstance(value, dict):
            value = _secret_value(secret, value["valueFrom"]["secretKeyRef"])
        hub_env[name] = value
    hub_env["ESAP_SITE_FILE"] = str(site)
    hub_env["ESAP_SERVICE_URL"] = f"http://127.0.0.1:{service_port}"
    hub = HubProcess(tmp_path / "hub", LOAD_SNIPPETS, env=hub_env)

    # the service: the Deployment's container, run as a local process
    (container,) = objects[("Deployment", "esap-service")]["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "esap-spawner"
    args = [sys.executable, "-m", "esap_spawner.cli", *container["command"][1:]]
    local = {
        "--site-file=/etc/esap/site.yaml": f"--site-file={site}",
        "--ip=0.0.0.0": "--ip=127.0.0.1",
        "--port=8890": f"--port={service_port}",
    }
    assert set(local) <= set(args)
    args = [local.get(a, a) for a in args]
    service_env = {"PATH": str(Path(sys.executable).parent), "KUBECONFIG": no_cluster}
    for item in container["env"]:
        if "valueFrom" in item:
            service_env[item["name"]] = _secret_value(secret, item["valueFrom"]["secretKeyRef"])
        else:
            service_env[item["name"]] = item["value"]
    service_env["JUPYTERHUB_API_URL"] = f"http://127.0.0.1:{hub.hub_port}/hub/api"
    log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen(
        args, env=service_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        hub.start()
        tokens = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        deadline = time.monotonic() + 30
        while True:
            r = requests.get(
                f"{hub.url}/services/esap/api/v1/facility",
                timeout=5,
                headers={"Authorization": f"token {tokens['portal-api-token']}"},
            )
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.status_code == 200, (r.text, (tmp_path / "service.log").read_text()[-2000:])
        assert r.json()["name"] == values["esap"]["facility"]["name"]

        r = requests.get(
            f"{hub.url}/services/esap/api/v1/profiles",
            headers={"Authorization": f"token {tokens['portal-api-token']}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        advertised = [p["slug"] for p in r.json()["profiles"]]
        assert advertised == [p["slug"] for p in values["esap"]["profiles"]]

        # Prometheus' token reads both metrics endpoints
        bearer = {"Authorization": f"Bearer {tokens['prometheus-api-token']}"}
        assert requests.get(f"{hub.url}/hub/metrics", headers=bearer, timeout=10).ok
        r = requests.get(f"{hub.url}/services/esap/metrics", headers=bearer, timeout=10)
        assert r.status_code == 200, r.text
        assert requests.get(f"{hub.url}/services/esap/metrics", timeout=10).status_code == 401

        # a user's browser signs in to the status page through the hub (OAuth)
        hub.create_user("alice")  # (the hub has no cluster: her server is never looked at)
        page = hub.login("alice", next_url="/services/esap/").get(
            f"{hub.url}/services/esap/", timeout=30
        )
        assert page.status_code == 200, (page.text, (tmp_path / "service.log").read_text()[-2000:])
        assert "signed in as <strong>alice</strong>" in page.text
    finally:
        hub.stop()
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(5)
        log.close()


def test_service_history_database_comes_from_a_secret() -> None:
    def container(objects: dict[Any, Any]) -> dict[str, Any]:
        pod = objects[("Deployment", "esap-service")]["spec"]["template"]["spec"]
        return dict(pod["containers"][0])

    default = container(render({}))
    assert "--db-url=" in default["command"]  # no shared database: no history, said plainly
    assert all(e["name"] != "ESAP_DATABASE_URL" for e in default["env"])

    shared = container(render({"service": {"databaseSecret": "esap-history"}}))
    assert not any(arg.startswith("--db-url") for arg in shared["command"])
    (env,) = [e for e in shared["env"] if e["name"] == "ESAP_DATABASE_URL"]
    assert env["valueFrom"] == {"secretKeyRef": {"name": "esap-history", "key": "url"}}
