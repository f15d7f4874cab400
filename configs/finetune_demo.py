r"""Fine-tuning demo: the XS model of configs/demo.py on the sample dataset's clips, on CPU.

    python -m mgjax.finetune --config=configs/finetune_demo.py --config.init=workdir/demo --workdir=workdir/ft_demo \
        --config.data.data_dir=workdir/demo/demo_data/records

--config.init='' trains the same model from scratch (the baseline).
"""

from mgjax import config as base


def get_config():
  c = base.finetune_base('XS')
  c.model.update(frames=8, image_size=64, dtype='float32', drop_path=0.1)
  c.model.decoder_depth = 2
  c.data.update(workers=2, num_repeats=2)
  c.global_batch = 16
  c.optim.update(base_lr=1.6e-2, warmup_steps=30)  # lr 1e-3
  c.total_steps = 400
  c.checkpoint.update(every_steps=200, keep=2)
  c.log_every = 50
  c.eval_every = 200
  return c
