r"""Fine-tuning demo: the XS model of configs/demo.py on the sample dataset's clips, on CPU.

    python -m mgjax.finetune --config=configs/finetune_demo.py --config.init=workdir/demo --workdir=workdir/ft_demo \
        --config.data.data_dir=workdir/demo/demo_data/records

--config.init='' trains the same model from scratch (the baseline).

The VideoMAE recipe of finetune_s/b/l (mixup, cutmix, RandAugment, random erasing, crops down to 8% of
the frame, lr 1e-3) is made for 224-pixel clips and large datasets. On the sample's 64-pixel clips, where a hand is a few
pixels, and a few hundred training segments, it did not get past the class prior in 1000 steps (on a
24-subject sample: training loss 3.36 -> 3.26, test top-1 at the majority class), so the demo keeps crops
above 60% of the frame, drops the mixing and the photometric augmentation, and uses a 3x larger
learning rate.
"""

from mgjax import config as base


def get_config():
  c = base.finetune_base('XS')
  c.model.update(frames=8, image_size=64, dtype='float32', drop_path=0.1)
  c.model.decoder_depth = 2
  c.data.update(workers=2, num_repeats=2, crop_scale=(0.6, 1.0), randaug_n=0, erase_prob=0.0)
  c.demo_sample.update(base.DEMO_FLOW_SAMPLE)
  c.augment.update(mixup=0.0, cutmix=0.0)
  c.global_batch = 16
  c.optim.update(base_lr=4.8e-2, warmup_steps=30)  # lr 3e-3
  c.total_steps = 1000
  c.checkpoint.update(every_steps=250, keep=2)
  c.log_every = 50
  c.eval_every = 250
  return c
