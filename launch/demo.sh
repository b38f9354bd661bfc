#!/usr/bin/env bash
# The README demo: set up, train the baseline on the synthetic benchmark on CPU, evaluate it on
# every synthetic domain and print the table. WORKDIR defaults to runs/demo (a fresh run each
# time: delete it to start over, or keep it to resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
WORKDIR=${WORKDIR:-runs/demo}
export FERJAX_PROGRESS=${FERJAX_PROGRESS:-1}
# Training ends with an evaluation on every synthetic domain and prints the table.
.venv/bin/python -m ferjax.train --config configs/baseline_synthetic.py:cpu --workdir "$WORKDIR" "$@"
echo "Re-evaluate any time: .venv/bin/python -m ferjax.eval --workdir $WORKDIR [--datasets synthetic:lab:test,...]"
