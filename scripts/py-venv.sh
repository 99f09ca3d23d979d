#!/usr/bin/env bash
# Makes (once per change of scripts/py-requirements.txt) the virtualenv of the Python tools the
# tests use and prints its path. MARTIX_PY_VENV picks another place.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MARTIX_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/martix-py}"
stamp="$venv/.requirements"
if ! cmp -s scripts/py-requirements.txt "$stamp" 2>/dev/null; then
  printf '==> installing the Python test tools into %s (PyPI)\n' "$venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/py-requirements.txt >&2
  cp scripts/py-requirements.txt "$stamp"
fi
printf '%s\n' "$venv"
