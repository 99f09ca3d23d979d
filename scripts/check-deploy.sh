#!/usr/bin/env bash
# Static checks of deploy/ where no container engine runs: the container recipe (hadolint),
# the Kubernetes manifests (kubernetes-validate, strict) and the compose file (the compose
# specification's JSON schema, as check-jsonschema vendors it). The tools come from PyPI, pinned
# in deploy/check-requirements.txt, into a virtualenv kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

venv="${MARTIX_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/martix-deploy-venv}"
stamp="$venv/.requirements"
if ! cmp -s deploy/check-requirements.txt "$stamp" 2>/dev/null; then
  say "installing the deploy checks into $venv (PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/check-requirements.txt
  cp deploy/check-requirements.txt "$stamp"
fi

say "hadolint deploy/Dockerfile"
"$venv/bin/hadolint" --failure-threshold info deploy/Dockerfile

say "kubernetes-validate deploy/k8s"
manifests=()
for f in deploy/k8s/*.yaml; do
  # kustomization.yaml is kustomize's own file, not a Kubernetes resource.
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
"$venv/bin/kubernetes-validate" --strict --quiet "${manifests[@]}"
# Every resource the kustomization names exists.
grep -E '^  - ' deploy/k8s/kustomization.yaml | sed 's/^  - //' | while read -r r; do
  [ -f "deploy/k8s/$r" ] || { say "deploy/k8s/kustomization.yaml names $r, which is missing"; exit 1; }
done

say "compose specification schema: deploy/compose.yaml"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
# Files the compose file mounts exist.
grep -oE '\./compose/[^:]+' deploy/compose.yaml | while read -r p; do
  [ -e "deploy/$p" ] || { say "deploy/compose.yaml mounts $p, which is missing"; exit 1; }
done
