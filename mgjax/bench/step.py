r"""Train-step benchmark: compiles the pretraining step of a config and times it on random data.

    python -m mgjax.bench.step --config=configs/vmae_l.py [--batch=32] [--steps=20] [--config.model.attention=xla]

Prints clips/s, achieved TFLOP/s by the FLOP model of docs/reference.md, section 4 (forward x 3, visible tokens
through the encoder, the visible and decoded tokens through the decoder: all tokens unless
`model.decoder_mask_ratio` sets dual masking) and MFU against the chip's dense bf16 datasheet peak; beside
them XLA's own count of the compiled step (cost analysis: FLOPs and bytes accessed per clip, the number of
fusions). The last line reads `clips/s: X  TFLOP/s: Y  MFU: Z%`.
"""

from __future__ import annotations

import re
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mgjax.bench import flops
from mgjax.data import pretrain
from mgjax.models import functional, videomae, vit
from mgjax.train import optim, sharding, step as step_lib

flags.DEFINE_integer('batch', 32, 'Global batch (clips per step).')
flags.DEFINE_integer('steps', 20, 'Timed steps, after 3 warm-up steps.')
flags.DEFINE_float('peak_tflops', 0.0, 'Override the datasheet peak (dense bf16 TFLOP/s per chip).')
config_flags.DEFINE_config_file('config', None, 'Pretraining config.', lock_config=True)
FLAGS = flags.FLAGS

def xla_counts(compiled, batch: int) -> str:
  """XLA's cost analysis of the compiled step, per clip, and its fusion count (what the optimiser left)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  hlo = compiled.as_text() or ''
  ops = {op: len(re.findall(rf'= [^ ]+ {op}\(', hlo)) for op in ('gather', 'scatter', 'transpose', 'copy')}
  return (f'XLA: {cost.get("flops", float("nan")) / batch / 1e9:.4g} GFLOP and '
          f'{cost.get("bytes accessed", float("nan")) / batch / 1e9:.4g} GB accessed per clip, '
          f'{hlo.count(" fusion(") + hlo.count(" fusion.")} fusions, '
          + ', '.join(f'{n} {op}' for op, n in ops.items()) + ' instructions')


def main(argv):
  del argv
  config = FLAGS.config
  cfg = videomae.ModelConfig(**config.model.to_dict())
  mesh = sharding.make_mesh(tuple(config.mesh))
  fns = functional.ModelFns.create(cfg)
  lr = optim.schedule(base_lr=config.optim.base_lr, min_lr=config.optim.min_lr, global_batch=FLAGS.batch,
                      warmup_steps=10, total_steps=1000)
  tx = optim.make_optimizer(lr, b1=config.optim.b1, b2=config.optim.b2, weight_decay=config.optim.weight_decay)
  state, shardings = step_lib.create_state(fns, tx, mesh, seed=0)
  jitted, bsh = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, lr, drop_path=cfg.drop_path > 0),
                                        mesh, shardings, {'video': 6, 'mask': 3})
  rng = np.random.default_rng(0)
  host = {'video': rng.integers(0, 256, (FLAGS.batch, cfg.frames, cfg.image_size, cfg.image_size, 3), np.uint8),
          'mask': np.stack([pretrain.tube_mask(rng, cfg.grid, cfg.mask_ratio) for _ in range(FLAGS.batch)])}
  if cfg.decoder_mask_ratio:
    host['mask'] = np.stack([pretrain.dual_mask(rng, m, cfg.grid, cfg.decoder_mask_ratio, cfg.num_decoded)
                             for m in host['mask']])
  batch = step_lib.to_global(host, config.micro_batches, bsh)
  key = jax.random.key(0)
  size = videomae.SIZES[cfg.size]
  dim, heads = size.dim, size.heads
  attention = vit.resolve_attention(cfg.attention, cfg.dtype, dim // heads)
  t0 = time.perf_counter()
  compiled = jitted.lower(state, batch, key).compile()
  print(f'compiled in {time.perf_counter() - t0:.1f}s on {jax.device_count()} x {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}), mesh {dict(mesh.shape)}, batch {FLAGS.batch}, '
        f'attention {cfg.attention} ({attention}), dtype {cfg.dtype}, remat {cfg.remat}, '
        f'decoder_mask_ratio {cfg.decoder_mask_ratio}')
  print(xla_counts(compiled, FLAGS.batch))
  for _ in range(3):
    state, m = compiled(state, batch, key)
  jax.block_until_ready(m['loss'])
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, m = compiled(state, batch, key)
  jax.block_until_ready(m['loss'])
  dt = (time.perf_counter() - t0) / FLAGS.steps
  clips = FLAGS.batch / dt
  tflops = clips * flops.flops_per_clip(cfg) / 1e12
  peak = FLAGS.peak_tflops or flops.device_peak(jax.devices()[0])
  print(f'{dt * 1e3:.1f} ms/step; {flops.flops_per_clip(cfg) / 1e9:.4g} GFLOP per clip (FLOP model); '
        f'loss {float(m["loss"]):.4f}')
  mfu = f'{100 * tflops / (peak * jax.device_count()):.1f}%' if peak else 'n/a (no datasheet peak for this device)'
  print(f'clips/s: {clips:.1f}  TFLOP/s: {tflops:.2f}  MFU: {mfu}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
