#!/usr/bin/env bash
# GPU checks in one run, for a machine with CUDA torch, scipy and scikit-image but none of our
# other dependencies (the wheels for SimpleITK and pymedphys travel in .whl/):
#   bash scripts/device_checks.sh [OUTDIR]
# 1. the CUDA tests (evaluator image metrics, gamma, dose engine: CUDA equals CPU);
# 2. benchmarks/image_metrics.py on cuda and cpu (same machine), reference included;
# 3. benchmarks/dose.py gamma (ours cuda vs cpu vs pymedphys) and dose recompute cuda vs cpu.
set -uo pipefail
out=${1:-${OUT:-/tmp/device-out}}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
  nproc; } 2>&1 | tee "$out/machine.txt"
python3 -m pytest -q -ra -p no:cacheprovider -o addopts="" tests/evaluator -k "cuda" \
  2>&1 | tee "$out/pytest_cuda.txt"
if [ -z "${DOSE_ONLY:-}" ]; then  # DOSE_ONLY=1: skip the image-metric benchmark
  python3 benchmarks/image_metrics.py --device cuda --repeat 3 2>&1 | tee "$out/image_metrics.txt"
  python3 benchmarks/image_metrics.py --device cpu --repeat 1 --no-reference 2>&1 \
    | tee -a "$out/image_metrics.txt"
fi
python3 benchmarks/dose.py --device cuda --skip-pyradplan --size realistic 2>&1 \
  | tee "$out/dose.txt"
python3 benchmarks/dose.py --device cpu --skip-pymedphys --skip-pyradplan --size realistic \
  2>&1 | tee -a "$out/dose.txt"
python3 benchmarks/dose.py --device cuda --skip-gamma --skip-pyradplan --anatomy pelvis \
  --size realistic 2>&1 | tee -a "$out/dose.txt"
