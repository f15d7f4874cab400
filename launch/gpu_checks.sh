#!/usr/bin/env bash
# The standing benchmarks of one GPU machine, as one script of under 8 minutes (run from the repository root):
#
#   OUT=/tmp/gpu_out bash launch/gpu_checks.sh
#
# Side by side in one run, so the figures compare as ratios:
#   1. mgjax.bench.step on CONFIG (vmae_l), batch BATCH: the plain step, then dual masking
#      (model.decoder_mask_ratio=0.5); then vmae_h both ways at batch H_BATCH.
#   2. mgjax.bench.torch_step: transformers VideoMAEForPreTraining on the same config and batch, eager
#      (SDPA) and under torch.compile.
#   3. mgjax.bench.memory: the largest batch per device under 80 and 141 GB, remat none and full.
#   4. mgjax.bench.input on the CPU meanwhile: the pipeline's clips/s per core, and with data.workers=-1.
# Every stage has its own time limit; one that fails or runs out leaves its log and the next goes on.
# Figures go to $OUT/summary.txt (and stdout), every log to $OUT/logs/. Environment: PY (python), CONFIG,
# BATCH, H_BATCH (0 skips vmae_h), TORCH (0 skips PyTorch). Where the packages travel as wheels (the
# device tool of this workplace), .whl/ is installed first.
. launch/gpu_common.sh
mkdir -p "$OUT/logs"
CONFIG=${CONFIG:-configs/vmae_l.py}; BATCH=${BATCH:-32}; H_BATCH=${H_BATCH:-16}; TORCH=${TORCH:-1}

# The input pipeline on the CPU while the GPU runs the steps (records built first, about a minute).
(JAX_PLATFORMS=cpu timeout 300 $PY -m mgjax.bench.input --config="$CONFIG" --batches=8 --workdir="$W/input" \
  > "$OUT/logs/input.log" 2>&1
 D=$(ls -d "$W"/input/data 2>/dev/null)
 [ -n "$D" ] && JAX_PLATFORMS=cpu timeout 120 $PY -m mgjax.bench.input --config="$CONFIG" --data_dir="$D" \
   --workers=-1 --batches=16 > "$OUT/logs/input_auto.log" 2>&1) &
INPUT=$!

step() {  # name limit config batch flags...
  local name=$1 limit=$2 config=$3 batch=$4; shift 4
  timeout "$limit" $PY -m mgjax.bench.step --config="$config" --batch="$batch" --steps=10 "$@" \
    > "$OUT/logs/step_$name.log" 2>&1
  log "step $name (rc $?): $(grep -E '^compiled|^XLA|ms/step|^clips/s' "$OUT/logs/step_$name.log" | tr '\n' ' ')"
}
step l 100 "$CONFIG" "$BATCH"
step l_dual 100 "$CONFIG" "$BATCH" --config.model.decoder_mask_ratio=0.5
if [ "$TORCH" = 1 ]; then
  timeout 150 $PY -m mgjax.bench.torch_step --config="$CONFIG" --batch="$BATCH" --steps=10 \
    > "$OUT/logs/torch.log" 2>&1
  log "torch (rc $?): $(grep -E '^torch' "$OUT/logs/torch.log" | tr '\n' ' ')"
fi
if [ "$H_BATCH" != 0 ]; then
  step h 90 configs/vmae_h.py "$H_BATCH"
  step h_dual 90 configs/vmae_h.py "$H_BATCH" --config.model.decoder_mask_ratio=0.5
fi
timeout $(( 450 - $(el) > 30 ? 450 - $(el) : 30 )) $PY -m mgjax.bench.memory --config="$CONFIG" --remat=none,full \
  --fsdp_devices=0 > "$OUT/logs/memory.log" 2>&1
log "memory (rc $?): $(grep -E '^remat|^[A-Z]+ ' "$OUT/logs/memory.log" | tr '\n' ' ')"
wait $INPUT
log "input: $(grep -E '^num_repeats|^clips/s per core' "$OUT/logs/input.log" | tr '\n' ' ')"
log "input, data.workers=-1: $(grep -E '^num_repeats' "$OUT/logs/input_auto.log" 2>/dev/null | tr '\n' ' ')"
log "done"
