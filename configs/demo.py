r"""Demo: a tiny VideoMAE pretrained on the generated sample dataset, on CPU in a few minutes.

    python -m mgjax.main --config=configs/demo.py --workdir=workdir/demo

With no data_dir, the sample dataset is generated and built into WORKDIR/demo_data first.
"""

from mgjax import config as base


def get_config():
  c = base.pretrain_base('T')
  c.model.update(frames=8, image_size=64, patch=16, tubelet=2, dtype='float32', mask_ratio=0.75)
  c.model.decoder_depth = 1
  c.data.update(stride=4, num_repeats=2, workers=2, static_motion=5e-5)
  c.demo_sample.update(subjects=8, videos_per_subject=2, frames=500)
  c.global_batch = 16
  c.optim.update(base_lr=1.6e-2, warmup_steps=20)  # lr = 1.6e-2 * 16 / 256 = 1e-3
  c.total_steps = 300
  c.checkpoint.update(every_steps=100, keep=2)
  c.log_every = 25
  c.viz_every = 150
  return c
