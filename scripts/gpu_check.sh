#!/usr/bin/env bash
# The prepared GPU check: validates and benchmarks mosaic_pretrain on a GPU machine that has torch
# and CUDA but no package registry, in under 10 minutes of wall time, then prints a summary.
#
#   bash scripts/offline_wheels.sh .whl 3.12          # here, where the registry is reachable
#   bash scripts/gpu_check.sh --out OUT               # there, from the repository root
#   bash scripts/gpu_check.sh --dry-run --out /tmp/c  # the same sequence, tiny, on a CPU
#
# It installs .whl/*.whl into a private folder (--site, default /tmp/mosaic_pretrain_site) with
# pip --no-index --no-deps, leaving the machine's torch alone; records versions; runs the GPU
# tests, the training-step benchmark (each configuration in its own subprocess with its own
# timeout) and 200 batches through `python -m mosaic_pretrain train`; and writes six files to
# OUT (training_step.json/.md, versions.json, pytest_gpu.log, gpu_check.log, summary.md) and
# the results to benchmarks/results/. Parts, budgets and options: the docstring of
# mosaic_pretrain/bench/gpu_check.py, and --help. PYTHON picks the interpreter (default: the
# repository's .venv if there is one, else python3, the one with torch on a GPU image).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
default_python=python3
[ -x .venv/bin/python ] && default_python=.venv/bin/python
exec "${PYTHON:-$default_python}" -m mosaic_pretrain.bench.gpu_check "$@"
