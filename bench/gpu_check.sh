#!/usr/bin/env bash
# The one-shot GPU check of issue 15 (sized for <= 8 minutes on one H200): the CuPy tests, then the suite's
# tagger, Tree-LSTM and LM, word by word and sentence-level, at minibatch 64 and 256, against PyTorch on the same
# GPU. Writes ONE JSON file, $OUT/gpu_check.json (bench/gpu_check.py says what is in it).
#
# The lent machine (Python 3.12, CuPy 14 / CUDA 13, PyTorch 2.11, NumPy, no network) lacks greenlet; it travels
# as a wheel in .whl/ (git-ignored), fetched here once, before the run:
#
#   bench/gpu_check.sh --fetch-wheels
#
# then, with the device tool (one call: at most a minute to build the Cython hot path, then bench/gpu_check.py's
# 390 s budget; 540 s leaves room to spare):
#
#   run(command="CPU_TREE_256=<figure> bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
#
# and record $OUT/gpu_check.json's figures in bench/RESULTS.md. On a CPU, the same code path at toy sizes
# (NumPy and torch CPU; writes /tmp/gpu_check/gpu_check.json unless OUT is set):
#
#   bench/gpu_check.sh --dry-run
#
# CPU_TREE_256, when set, is the 2-core CPU machine's autobatch-seq Tree-LSTM figure at minibatch 256 (sentences/s)
# on the same synthetic trees: the reference of the "Tree-LSTM >= 10x CPU" target, which the JSON then states.
# Measure it on an idle machine (a loaded one understates it) with
#   OPENBLAS_NUM_THREADS=1 python -m bench.gpu_check --cpu --tasks tree --systems autobatch-seq --batch-sizes 256 \
#       --timed 6 --out /tmp/cpu.json
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl greenlet
    exit
fi

OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ! python3 -c "import greenlet" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/greenlet-*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The repository runs from its checkout: nothing to install on a machine without network. The Cython hot path
# (setup.py) is built in place for this Python when it can be within a minute; else the engine runs pure Python.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
if [ "${1:-}" != "--dry-run" ]; then
    timeout 60 python3 setup.py -q build_ext --inplace -j 3 >/dev/null 2>&1 || echo "hot path not compiled: pure Python"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
exec python3 -m bench.gpu_check --out "$OUT/gpu_check.json" ${CPU_TREE_256:+--cpu-tree-256 "$CPU_TREE_256"} "$@"
