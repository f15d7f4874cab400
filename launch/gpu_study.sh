#!/usr/bin/env bash
# The checks to run on a GPU machine, as one script (run from the repository root):
#
#   OUT=/tmp/gpu_out bash launch/gpu_checks.sh
#
# 1. Step benchmarks of VideoMAE ViT-L pretraining (mgjax.bench.step, batch 32, random data; the PyTorch
#    figures on the same batch are in docs/reference.md, section 4), while the CPU generates the samples.
# 2. The frozen-feature study of docs/representation_study.md at a scale the 2-core demo cannot reach: the
#    S model at 112 pixels (configs/demo_s112.py, MODEL's overrides on top) pretrained on the 64-subject
#    sample of each seed in SEEDS, then kNN and linear probe (mean, temporal_std and temporal_std_grid
#    readouts) against the same model at random initialisation, with mgjax.compare's bootstrap intervals.
#
# Every stage has a time limit inside BUDGET seconds; a stage that fails or runs out leaves its log and
# the next stage goes on. Figures go to $OUT/summary.txt (and stdout), logs and results to $OUT/logs.tar.gz.
# Environment: PY (python), SEEDS, STEPS, WORKERS, BUDGET, SAMPLE (a dict of mgjax.config), BENCH (0 skips
# the ViT-L benchmarks), BENCH_CONFIG, BENCH_BATCH, MODEL (overrides of the pretraining and eval model).
# Where the packages travel as wheels (the device tool of this workplace), .whl/ is installed first.
#
# Timing: on one H200 the benchmarks and two seeds side by side took 8.5 minutes, the pretraining
# input-bound at about 700 clips/s per run with 6 workers and stopped at step 1769 of 4000 by the budget.
# On one H100, `BENCH=0 SEEDS=3 WORKERS=14 BUDGET=540` took 391 s (sample 93 s, 4000 steps 225 s at about
# 1,500 clips/s, the three pretrained readouts 63 s): one seed a call gives the full schedule.
. launch/gpu_common.sh
SEEDS=${SEEDS:-"3 4"}; STEPS=${STEPS:-4000}; WORKERS=${WORKERS:-6}; BUDGET=${BUDGET:-560}
SAMPLE=${SAMPLE:-DEMO_FLOW_SAMPLE}; BENCH=${BENCH:-0}
BENCH_CONFIG=${BENCH_CONFIG:-configs/vmae_l.py}; BENCH_BATCH=${BENCH_BATCH:-32}
MODEL=${MODEL:-"--config.model.size=S --config.model.image_size=112"}

# The sample datasets, on the CPU, while the benchmarks have the GPU.
for s in $SEEDS; do
  JAX_PLATFORMS=cpu $PY -c "
from mgjax import config as c
from mgjax.data import demo
demo.prepare('$W/s$s', dict(c.$SAMPLE, seed=$s))" > "$W/data$s.log" 2>&1 &
done

bench() {
  local name=$1; shift
  timeout 110 $PY -m mgjax.bench.step --config="$BENCH_CONFIG" --batch="$BENCH_BATCH" --steps=10 "$@" \
    > "$W/bench_$name.log" 2>&1
  log "bench $name (rc $?): $(grep -E '^compiled|ms/step|^clips/s' "$W/bench_$name.log" | tr '\n' ' ')"
}
if [ "$BENCH" = 1 ]; then
  bench auto  # cuDNN attention on a recent NVIDIA GPU
  bench xla --config.model.attention=xla
  [ "$(el)" -lt 170 ] && bench auto_dec4 --config.model.decoder_depth=4
fi
wait
log "data ready: $(for s in $SEEDS; do ls -d $W/s$s/demo_data/records/imigue3k/clips/1.0.0 2>/dev/null; done | wc -l) of $(echo $SEEDS | wc -w)"

export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share the GPU from here on
PRE_T=$(( BUDGET - 100 - $(el) ))
log "pretraining: $STEPS steps, batch 64, $MODEL, time limit ${PRE_T}s"
for s in $SEEDS; do
  timeout $PRE_T $PY -m mgjax.main --config=configs/demo_s112.py $MODEL --config.seed=$s \
    --config.data.data_dir=$W/s$s/demo_data/records --workdir=$W/s$s/pre \
    --config.total_steps=$STEPS --config.data.workers=$WORKERS > "$W/pre$s.log" 2>&1 &
done
evaluate() {  # seed checkpoint name pooling
  timeout $(( BUDGET - 20 - $(el) )) $PY -m mgjax.evaluate --config=configs/eval.py $MODEL \
    --config.checkpoint=$2 --config.data_dir=$W/s$1/demo_data/records --config.pooling=$4 --config.seed=$1 \
    --config.tasks="('knn','linear_probe')" --workdir=$W/s$1/e_$3_$4 > "$W/s$1.e_$3_$4.log" 2>&1
}
for s in $SEEDS; do
  (for pool in mean temporal_std temporal_std_grid; do evaluate $s random random $pool; done) &
done
wait
for s in $SEEDS; do
  log "seed $s pretraining: $(grep -E 'step [0-9]+/|Done' "$W/pre$s.log" | tail -3 | sed 's/.*\] //' | tr '\n' ' ')"
done
for s in $SEEDS; do for pool in mean temporal_std temporal_std_grid; do evaluate $s $W/s$s/pre pre $pool & done; done
wait
for s in $SEEDS; do for pool in mean temporal_std temporal_std_grid; do
  log "seed $s $pool: $($PY -m mgjax.compare $W/s$s/e_pre_$pool $W/s$s/e_random_$pool 2>&1 | tail -2 | tr '\n' ' ')"
done; done
tar czf "$OUT/logs.tar.gz" -C "$W" --exclude='*/demo_data' --exclude='*/features' --exclude='*/checkpoints' \
  --exclude='*.npz' . 2>/dev/null
log "done"
