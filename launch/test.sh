#!/usr/bin/env bash
# Set up and run the test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
FERJAX_EXTRAS=${FERJAX_EXTRAS:-test,torch,predict,onnx} bash launch/setup.sh
.venv/bin/python -m pytest -q "$@"
