#!/usr/bin/env bash
# GPU benchmark (issue 22, item 5) in one unattended command: bench/gpu.py with every section.
#
#   bench/gpu.sh [OUT_DIR] [bench/gpu.py options...]      # default OUT_DIR: $OUT, else bench/results/gpu
#
# Python: $PYTHON, else .venv/bin/python when present, else python3 (the device machine's image has torch
# but lacks pydantic, bcos and pycocotools: `make gpu-wheels` puts them into .whl/, which this script installs
# into /tmp/mg-tune-site first, offline). mg_tune is imported from this checkout (no install needed).
# The whole run is bounded by $GPU_BENCH_TIMEOUT seconds (default 560, under the device's 10-minute limit);
# bench/gpu.py also stops starting sections after --budget-s and rewrites its JSON/markdown after each one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-bench/results/gpu}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT_DIR=$1; shift; fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mg-tune-site .whl/*.whl
  export PYTHONPATH=/tmp/mg-tune-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
mkdir -p "$OUT_DIR"
exec timeout --signal=TERM --kill-after=20 "${GPU_BENCH_TIMEOUT:-560}" "$PY" bench/gpu.py --out "$OUT_DIR" "$@"
