#!/usr/bin/env bash
# One lease of a lent GPU machine, in stages by value, each bounded by what is left of BUDGET seconds:
#   1. the CUDA tests (tests/test_cuda.py, tests/test_cuda_models.py);
#   2. run.py's eager VAE and DMM tables on the GPU (Pixyz and Pyro side by side);
#   3. cuda_syncs.py: host-device synchronizations per training step;
#   4. compiled.py on the GPU: default mode, then CUDA graphs (mode="reduce-overhead");
#   5. the compiled DMM, if time is left.
# Usage (repository root, on the GPU machine): OUT=<folder> BUDGET=480 [STAGES=tests,eager,...] bash benchmarks/gpu_session.sh
# Each stage writes its log to $OUT/<stage>.log (seven files in all: the device tool returns at most eight).
# The machine has torch but neither pyro-ppl nor pixyz: their wheels travel in .whl/ (see benchmarks/README.md).
set -u
OUT=${OUT:-out/gpu}
BUDGET=${BUDGET:-480}
mkdir -p "$OUT"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
cap() { local l; l=$(left); if [ "$l" -lt "$1" ]; then echo "$l"; else echo "$1"; fi; }
want() { [[ ",${STAGES:-tests,eager,syncs,compiled,graphs,compiled_dmm}," == *",$1,"* ]]; }
stage() {  # stage NAME CAP command...
  want "$1" || return 0
  local name=$1 c; c=$(cap "$2"); shift 2
  if [ "$c" -lt 20 ]; then echo "== $name: skipped ($(left) s left)" | tee -a "$OUT/summary.txt"; return; fi
  echo "== $name (limit ${c} s)" | tee -a "$OUT/summary.txt"
  local t0; t0=$(date +%s)
  timeout -k 5 "$c" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  tail -n 40 "$OUT/$name.log"
}

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  mkdir -p /tmp/site/IPython  # pixyz imports IPython.display.Math for its notebook output only
  [ -f /tmp/site/IPython/display.py ] || { touch /tmp/site/IPython/__init__.py; echo "Math = str" > /tmp/site/IPython/display.py; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi -L | tee "$OUT/summary.txt"
python3 -c "import torch, pyro, pixyz; print('torch', torch.__version__, 'pyro', pyro.__version__, 'pixyz', pixyz.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/summary.txt"

stage tests 150 python3 -m pytest -o addopts="" -p no:cacheprovider -q -rA tests/test_cuda.py tests/test_cuda_models.py
stage eager 150 python3 benchmarks/run.py --device cuda --quick --rounds 30 --only vae,dmm --no-validate
stage syncs 60 python3 benchmarks/cuda_syncs.py
stage compiled 110 python3 benchmarks/compiled.py --device cuda --quick --only vae --kl analytic --rounds 20
stage graphs 110 python3 benchmarks/compiled.py --device cuda --quick --only vae --kl analytic --rounds 20 --mode reduce-overhead
stage compiled_dmm 120 python3 benchmarks/compiled.py --device cuda --quick --only dmm --kl analytic --rounds 10
echo "== done in $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
