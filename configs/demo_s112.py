r"""The demo at GPU scale: the S model (23.1M parameters with its decoder) at 112 x 112 pixels.

    python -m mgjax.main --config=configs/demo_s112.py --workdir=workdir/demo_s112
    python -m mgjax.main --config=configs/demo_s112.py --config.demo_sample.seed=3 --config.seed=3 \
        --workdir=workdir/demo_s112_seed3   # another draw of the sample

The demo's recipe (configs/demo.py: 8 frames at stride 4, tube masking at 0.75, a decoder of depth 2,
4000 steps, the 64-subject sample generated into WORKDIR/demo_data) with the S model at 112 pixels,
batch 64 and lr 6e-3 * 64 / 256 = 1.5e-3 after 200 warmup steps. On one H100 (16 cores) it is input
bound at about 1,500 clips/s with 14 input workers: 4000 steps in under 4 minutes, after 1.5 minutes of
sample generation. Frozen features of this model lead random initialisation by more than 10 points on kNN
and the linear probe with the temporal_std readout, also on the two samples (seeds 3 and 4) where the
CPU demo's XS model falls short (README, "Results on the sample data"). Evaluate it with
`--config.model.size=S --config.model.image_size=112` on configs/eval.py. `launch/gpu_study.sh` runs it.
"""

import os

from mgjax import config as base


def get_config():
  # configs/demo.py by path, so that this works from any working directory
  c = base.load_config_file(os.path.join(os.path.dirname(__file__), 'demo.py')).unlock()
  c.model.update(size='S', image_size=112)
  c.data.workers = max(2, (os.cpu_count() or 4) - 2)  # input bound: every core but two decodes
  c.global_batch = 64
  c.optim.update(base_lr=6e-3, warmup_steps=200)
  c.checkpoint.every_steps = 500
  c.log_every = 250
  c.viz_every = 0
  return c.lock()
