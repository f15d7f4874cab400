r"""VideoMAE ViT-H pretraining on iMiGUE-3K, the official recipe (docs/reference.md, section 2).

    python -m mgjax.main --config=configs/vmae_h.py --workdir=DIR --config.data.data_dir=DATA_DIR

Global batch 512 (lr 1.5e-4 x 512 / 256), AdamW (0.9, 0.95), wd 0.05, 40 warmup epochs then cosine to
1e-5 (scaled), 800 epochs, tube masking 0.9, 16 frames at stride 4, multi-scale crop to 224, repeated
augmentation 4. On several hosts add --coordinator/--num_processes/--process_id or --distributed.
"""

from mgjax import config as base


def get_config():
  c = base.pretrain_base('H')
  c.mesh = (1, -1, 1)  # FSDP: shard parameters and optimizer state over all devices
  c.model.remat = 'dots'
  return c
