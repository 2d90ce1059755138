#!/usr/bin/env bash
# Install areal-mega with its test extras (CPU torch 2.13.0) and run the whole suite.
# Extra arguments go to pytest, e.g. `bash launch/test.sh tests/engine -k pack`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e '.[test]'
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=disabled PYTHONUNBUFFERED=1
exec python -m pytest -q -p no:cacheprovider "${@:-tests}"
