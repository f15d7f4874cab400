r"""Fine-tuning ViT-S on iMiGUE-3K micro-gesture recognition (32 classes), the VideoMAE recipe.

    python -m mgjax.finetune --config=configs/finetune_s.py --config.init=PRETRAIN_WORKDIR --workdir=DIR \
        --config.data.data_dir=DATA_DIR [--config.label_fraction=0.1]

AdamW (0.9, 0.999), wd 0.05, layer-wise lr decay 0.75, lr base x global batch / 256, 5 warmup epochs,
drop path 0.1, mixup 0.8, cutmix 1.0, label smoothing 0.1, RandAugment m7 n4, random erasing 0.25,
repeated augmentation 2, mean pooling + fc_norm, head init scale 0.001. Test with mgjax.evaluate.
"""

from mgjax import config as base


def get_config():
  c = base.finetune_base('S')
  return c
