# What the GPU scripts (gpu_checks.sh, gpu_study.sh) share, sourced from the repository root: $OUT and $W,
# the elapsed-time log to $OUT/summary.txt, $PY, the wheels of .whl/ when the packages travel that way,
# and the versions of the stack.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; W=${W:-/tmp/gw}
mkdir -p "$OUT" "$W"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(el)s] $*" | tee -a "$OUT/summary.txt"; }
PY=${PY:-python3}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
(nvidia-smi -L 2>/dev/null; $PY -c "
import jax, flax, optax, orbax.checkpoint as oc, grain, numpy
print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax', oc.__version__, 'grain', grain.__version__, 'numpy', numpy.__version__)") 2>&1 | tee -a "$OUT/summary.txt"
log "nproc $(nproc)"
