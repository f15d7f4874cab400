r"""Demo: a small VideoMAE pretrained on the generated sample dataset, on CPU in about 10 minutes (2 cores).

    python -m mgjax.main --config=configs/demo.py --workdir=workdir/demo

With no data_dir, the sample dataset (64 subjects, 37 for training and 27 held out as the official
protocol's ids are, 2 labelled videos each, 4 press rooms) is generated and built into WORKDIR/demo_data
first. The loss (normalised-pixel MSE of the masked tokens) falls from about 1.0 to about 0.8 over the
4000 steps; pictures of input | masked | reconstruction go to WORKDIR/reconstructions, and a kNN on the
frozen encoder's features (256 clips of each split of the sample's `clips` records) to the log,
metrics.jsonl and TensorBoard every 1000 steps.

64 subjects and 4000 steps: with 24 subjects fine-tuning from this model beat fine-tuning from scratch
only within noise, and with 2000 steps the linear probe on its frozen features (temporal_std readout) led
random initialisation by less than 10 points on one of two samples (docs/representation_study.md).
"""

from mgjax import config as base


def get_config():
  c = base.pretrain_base('XS')
  c.model.update(frames=8, image_size=64, patch=16, tubelet=2, dtype='float32', mask_ratio=0.75)
  c.model.decoder_depth = 2
  c.data.update(stride=4, num_repeats=2, workers=2)
  c.demo_sample.update(base.DEMO_FLOW_SAMPLE)
  c.global_batch = 16
  c.optim.update(base_lr=1.6e-2, warmup_steps=50)  # lr = 1.6e-2 * 16 / 256 = 1e-3
  c.total_steps = 4000
  c.checkpoint.update(every_steps=200, keep=2)
  c.log_every = 100
  c.viz_every = 1000
  c.eval_every = 1000
  return c
