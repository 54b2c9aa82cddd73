#!/usr/bin/env bash
# Wheels to run mosaic_pretrain on an offline GPU machine whose Python already has torch (and
# numpy, pyyaml, matplotlib, xxhash, ...), without letting pip touch that torch: fetched here,
# where the package registry is reachable, installed there with --no-deps.
#
#   bash scripts/offline_wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
#   # on the GPU machine, from the repository root (scripts/gpu_check.sh does this, and more):
#   python3 -m pip install --no-index --no-deps --target /tmp/site DEST/*.whl
#   PYTHONPATH=/tmp/site:. python3 -m pytest -m gpu
#
# The list is what composer, streaming and this package need beyond an image that has torch and
# the common scientific packages, pinned to the versions CI tests with. transformers stays below
# 5 because mosaicml-streaming requires it, which drags tokenizers and huggingface-hub down with
# it. zstd: 1.5.7.2 (CI's) has no cp312 wheel and 1.5.7.3 is yanked.
# composer imports py-cpuinfo, tabulate and importlib-metadata (with zipp) at once, which such an
# image may lack: small pure-Python wheels, carried. torchvision is NOT carried: composer and
# streaming import it, but it must be the build made for the machine's own torch and CUDA, and
# the lent H200's image has it (0.26.0 beside torch 2.11.0+cu130, the device tool's KINDS.md);
# a PyPI wheel in the private folder would shadow that build with another one. For an image
# without torchvision, fetch the one built for its torch by hand into DEST.
# Checked on a CPU stand-in for such an image (torch 2.13 CPU, the image's packages at their
# newest, transformers 5 among them, a stub torchvision, plus these wheels for Python 3.11 in a
# --target folder at the front of PYTHONPATH): composer 0.32.1 imports and `mosaic_pretrain
# train` trains, saves and exports; `bash scripts/gpu_check.sh --dry-run` passes.
set -euo pipefail
dest=${1:-.whl}
python_version=${2:-3.12}
packages=(
  composer==0.32.1 mosaicml-streaming==0.13.0 mosaicml-cli==0.7.5 omegaconf==2.4.0
  transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2 torchmetrics==1.7.4
  torch-optimizer==0.3.0 backoff==2.2.1 gql==3.5.3 graphql-core==3.2.6 websockets==11.0.3
  ruamel.yaml==0.19.1 questionary==2.0.1 prompt-toolkit==3.0.36 wcwidth==0.9.4
  validators==0.36.0 coolname==2.2.0 brotli==1.2.1 python-snappy==0.7.3 cramjam==2.14.0
  zstd==1.5.6.1 catalogue==2.0.10 arrow==1.4.0 termcolor==3.3.0 argcomplete==3.7.2
  py-cpuinfo==9.0.0 tabulate==0.9.0 importlib-metadata==8.9.0 zipp==4.1.2
)
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
mkdir -p "$dest"
for package in "${packages[@]}"; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
    --implementation cp "${platforms[@]}" -d "$dest" "$package"
done
ls "$dest"
