r"""The PyTorch reference of mgjax.bench.step: transformers `VideoMAEForPreTraining` on the same config and batch.

    python -m mgjax.bench.torch_step --config=configs/vmae_l.py [--batch=32] [--steps=10] [--modes=eager,compile]

The model is the one mgjax exports (`weights.hf_config`: same sizes, decoder, normalised-pixel loss), at
random initialisation, trained on random uint8 clips with tube masks of the config's ratio: bf16 autocast
with fp32 parameters, SDPA attention, fused AdamW with the config's betas and weight decay, one optimizer
step per batch. `eager` runs it as written, `compile` under torch.compile (its compile steps untimed).
transformers has no dual masking: the config's decoder_mask_ratio is ignored here. Prints, per mode,
`torch MODE clips/s: X` with TFLOP/s by the FLOP model of mgjax.bench.step (without dual masking), so
both benchmarks of one run compare as a ratio.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mgjax.bench import flops as flops_lib
from mgjax.data import pretrain
from mgjax.models import videomae

flags.DEFINE_integer('batch', 32, 'Clips per step.')
flags.DEFINE_integer('steps', 10, 'Timed steps, after the warm-up ones.')
flags.DEFINE_list('modes', ['eager', 'compile'], 'eager and / or compile.')
config_flags.DEFINE_config_file('config', None, 'Pretraining config.', lock_config=True)
FLAGS = flags.FLAGS


def run(cfg: videomae.ModelConfig, config, mode: str, batch: int, steps: int) -> float:
  """Clips/s of `steps` timed training steps of transformers' VideoMAE in `mode`."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import VideoMAEConfig, VideoMAEForPreTraining  # pylint: disable=g-import-not-at-top
  from mgjax import weights  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  hf = VideoMAEConfig(**weights.hf_config(cfg, None))
  model = VideoMAEForPreTraining._from_config(hf, attn_implementation='sdpa').to(device)  # pylint: disable=protected-access
  o = config.optim
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(o.b1, o.b2), weight_decay=o.weight_decay,
                          fused=device == 'cuda')
  rng = np.random.default_rng(0)
  video = torch.from_numpy(rng.integers(0, 256, (batch, cfg.frames, 3, cfg.image_size, cfg.image_size),
                                        dtype=np.uint8)).to(device)
  mask = torch.from_numpy(np.stack([pretrain.tube_mask(rng, cfg.grid, cfg.mask_ratio) for _ in range(batch)]))
  mask = mask.to(device)
  mean = torch.tensor(videomae.IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
  std = torch.tensor(videomae.IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)

  def train_step():
    pixels = (video.float() / 255.0 - mean) / std
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = model(pixel_values=pixels, bool_masked_pos=mask).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  step_fn = torch.compile(train_step) if mode == 'compile' else train_step
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  t = time.perf_counter()
  for _ in range(3):
    loss = step_fn()
  sync()
  warm = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(steps):
    loss = step_fn()
  sync()
  dt = (time.perf_counter() - t) / steps
  print(f'torch {mode}: warm-up {warm:.1f}s, {dt * 1e3:.1f} ms/step, loss {float(loss.detach()):.4f} on {device} '
        f'({torch.cuda.get_device_name() if device == "cuda" else "cpu"}), torch {torch.__version__}')
  return batch / dt


def main(argv):
  del argv
  cfg = videomae.ModelConfig(**FLAGS.config.model.to_dict())
  cfg = dataclasses.replace(cfg, decoder_mask_ratio=0.0)
  flops = flops_lib.flops_per_clip(cfg)
  for mode in FLAGS.modes:
    clips = run(cfg, FLAGS.config, mode, FLAGS.batch, FLAGS.steps)
    print(f'torch {mode} clips/s: {clips:.1f}  TFLOP/s: {clips * flops / 1e12:.2f}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
