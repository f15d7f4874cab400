r"""Memory benchmark: the largest per-device batch of a config's pretraining step that fits a device.

    python -m mgjax.bench.memory --config=configs/vmae_l.py [--remat=none,dots,full] [--capacities_gb=80,141]
        [--fsdp_devices=8]

Compiles the train step (nothing runs: abstract inputs) for 2 and 4 clips per device and reads XLA's
memory analysis of each: arguments + outputs + temporaries - what the donated state aliases is the peak a
step needs on one device. That peak grows linearly with the batch; the line through the two points gives
the largest batch per device under each capacity (--usable of it: the allocator and the runtime take the
rest; JAX itself takes only 75% unless XLA_PYTHON_CLIENT_MEM_FRACTION says more). Then the same with FSDP
over --fsdp_devices devices (parameters and optimizer state sharded), in a child process with that many
devices of this backend (on a CPU host: XLA's fake host devices). On a GPU the figures are the GPU
compiler's; on a CPU host they are the CPU compiler's, an estimate of a GPU's (other fusions).
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_list('remat', ['none', 'dots', 'full'], 'Remat policies to compile.')
flags.DEFINE_list('capacities_gb', ['80', '141'], 'Device memories (GB, 1e9 bytes): H100, H200.')
flags.DEFINE_float('usable', 0.9, 'Fraction of a capacity the step may take.')
flags.DEFINE_integer('fsdp_devices', 8, 'Devices of the FSDP case (0: skip it).')
flags.DEFINE_string('mesh', 'data', "'data' (one device, data parallel) or 'fsdp' (all devices, FSDP).")
config_flags.DEFINE_config_file('config', None, 'Pretraining config.', lock_config=True)
FLAGS = flags.FLAGS
POINTS = (2, 4)  # clips per device of the two compiles


def peak_bytes(config, remat: str, per_device: int) -> tuple[int, dict]:
  """(peak bytes per device of one train step, the memory analysis fields) for `per_device` clips."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mgjax.models import functional, videomae  # pylint: disable=g-import-not-at-top
  from mgjax.train import optim, sharding, step as step_lib  # pylint: disable=g-import-not-at-top
  cfg = videomae.ModelConfig(**{**config.model.to_dict(), 'remat': remat})
  mesh = sharding.make_mesh((-1, 1, 1) if FLAGS.mesh == 'data' else (1, -1, 1))
  fns = functional.ModelFns.create(cfg)
  lr = optim.schedule(base_lr=1e-4, min_lr=0.0, global_batch=256, warmup_steps=10, total_steps=100)
  tx = optim.make_optimizer(lr, b1=0.9, b2=0.95, weight_decay=0.05)
  abstract, _ = step_lib.abstract_state(fns, tx)
  shardings = step_lib.state_shardings(mesh, abstract)
  jitted, bsh = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, lr, drop_path=cfg.drop_path > 0),
                                        mesh, shardings, {'video': 6, 'mask': 3})
  b = per_device * jax.device_count()
  mask_dtype = np.int8 if cfg.decoder_mask_ratio else np.bool_
  batch = {'video': jax.ShapeDtypeStruct((1, b, cfg.frames, cfg.image_size, cfg.image_size, 3), np.uint8,
                                         sharding=bsh['video']),
           'mask': jax.ShapeDtypeStruct((1, b, cfg.num_tokens), mask_dtype, sharding=bsh['mask'])}
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
  ma = jitted.lower(state, batch, key).compile().memory_analysis()
  fields = {k: int(getattr(ma, f'{k}_size_in_bytes')) for k in ('argument', 'output', 'temp', 'alias')}
  return fields['argument'] + fields['output'] + fields['temp'] - fields['alias'], fields


def report(config):
  import jax  # pylint: disable=g-import-not-at-top
  caps = [float(c) for c in FLAGS.capacities_gb]
  n = jax.device_count()
  where = f'{n} x {jax.devices()[0].device_kind} ({jax.default_backend()})'
  print(f'{config.model.size} {config.model.frames}x{config.model.image_size}px, dtype {config.model.dtype}, '
        f'decoder_mask_ratio {config.model.decoder_mask_ratio}, mesh {FLAGS.mesh} over {where}')
  for remat in FLAGS.remat:
    (p1, f1), (p2, _) = (peak_bytes(config, remat, b) for b in POINTS)
    per_clip = (p2 - p1) / (POINTS[1] - POINTS[0])
    fixed = p1 - per_clip * POINTS[0]
    fits = ', '.join(f'{c:g} GB: {max(0, int((FLAGS.usable * c * 1e9 - fixed) // per_clip))}' for c in caps)
    print(f'remat {remat:5s}: {fixed / 1e9:.2f} GB fixed + {per_clip / 1e9:.3f} GB per clip '
          f'(state {f1["argument"] / 1e9:.2f} GB); largest batch per device within {FLAGS.usable:.0%} of '
          f'{fits}')


def main(argv):
  del argv
  report(FLAGS.config)
  if FLAGS.mesh == 'data' and FLAGS.fsdp_devices > 1:
    env = dict(os.environ)
    import jax  # pylint: disable=g-import-not-at-top
    if jax.default_backend() == 'cpu':
      env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                          f' --xla_force_host_platform_device_count={FLAGS.fsdp_devices}').strip()
    elif jax.device_count() < FLAGS.fsdp_devices:
      print(f'FSDP over {FLAGS.fsdp_devices} devices: only {jax.device_count()} here, skipped')
      return
    sys.stdout.flush()
    subprocess.run([sys.executable, '-m', 'mgjax.bench.memory', *sys.argv[1:], '--mesh=fsdp'], env=env, check=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
