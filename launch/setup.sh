#!/usr/bin/env bash
# Creates .venv (if needed) and installs ferjax with the exact versions in constraints.txt.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml, constraints.txt or the
# extras changed. FERJAX_EXTRAS picks the extras (default: test; the test command adds torch,
# whose ~5 GB the demo does not need).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "ferjax needs Python >= 3.11; $PY is $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.ferjax-installed
EXTRAS=${FERJAX_EXTRAS:-test}
want=$( (cat pyproject.toml constraints.txt; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
