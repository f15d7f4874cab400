"""The pretraining loop, read top to bottom: mesh, input, model, state (restore or init), step, loop.

    train_and_evaluate(config, workdir)

A second run with the same workdir resumes from its latest checkpoint; SIGTERM saves and exits; a
non-finite loss stops the run before the bad state can be saved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from mgjax.data import demo
from mgjax.data import pretrain as pipeline
from mgjax.data import records
from mgjax.models.videomae import ModelConfig
from mgjax.train import checkpoint as ckpt
from mgjax.train import metrics as metrics_lib
from mgjax.train import optim
from mgjax.train import sharding
from mgjax.train import step as step_lib
from mgjax.train import viz


class NonFiniteLossError(FloatingPointError):
  pass


def model_config(config) -> ModelConfig:
  cfg = ModelConfig(**config.model.to_dict())
  if cfg.mask_type not in pipeline.MASK_TYPES:
    raise ValueError(f'config.model.mask_type: unknown {cfg.mask_type!r}; known: {pipeline.MASK_TYPES}')
  return cfg


def pipeline_config(config, data_dir: str, model_cfg: ModelConfig) -> pipeline.PipelineConfig:
  d = config.data
  return pipeline.PipelineConfig(
      data_dir=data_dir, config=d.name, split=d.split, seed=config.seed, global_batch=config.global_batch,
      sampling=pipeline.SamplingConfig(frames=model_cfg.frames, stride=d.stride, sampling=d.sampling,
                                       static_motion=d.static_motion, static_keep=d.static_keep),
      augment=pipeline.AugmentConfig(image_size=model_cfg.image_size, scales=tuple(d.scales), flip=d.flip,
                                     num_repeats=d.num_repeats),
      grid=model_cfg.grid, mask_ratio=model_cfg.mask_ratio,
      mask_type=model_cfg.mask_type, workers=d.workers, prefetch=d.prefetch)


def git_revision() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    rev = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True, check=True)
    dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=here, capture_output=True, text=True)
    return rev.stdout.strip() + ('+uncommitted' if dirty.stdout.strip() else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def _bytes_per_device(tree) -> int:
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def memory_report(compiled, state) -> dict:
  ma = compiled.memory_analysis()
  rep = {'param_bytes_per_device': _bytes_per_device(state['params']),
         'optimizer_bytes_per_device': _bytes_per_device(state['opt_state'])}
  if ma is not None:
    rep.update(argument_bytes=int(ma.argument_size_in_bytes), output_bytes=int(ma.output_size_in_bytes),
               activation_temp_bytes=int(ma.temp_size_in_bytes))
  return rep


class _Preemption:
  """SIGTERM sets a flag; the loop saves at the next step boundary and exits."""

  def __init__(self):
    self.requested = False
    self._old = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint at the next step, then exiting.')
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._old)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  # ---- Mesh.
  mesh = sharding.make_mesh(tuple(config.mesh))
  logging.info('Mesh %s over %d devices (%d processes)', dict(mesh.shape), jax.device_count(),
               jax.process_count())

  # ---- Input.
  model_cfg = model_config(config)
  data_dir = config.data.data_dir or demo.prepare(workdir, config.demo_sample.to_dict())
  source = records.data_source(data_dir, config.data.name, config.data.split)
  pcfg = pipeline_config(config, data_dir, model_cfg)
  steps_per_epoch = max(1, len(source) * config.data.num_repeats // config.global_batch)
  total_steps = config.total_steps or int(config.epochs * steps_per_epoch)
  warmup = config.optim.warmup_steps if config.optim.warmup_steps >= 0 else int(
      config.optim.warmup_epochs * steps_per_epoch)

  def make_iter(start_batch: int):
    return iter(pipeline.make_dataset(pcfg, jax.process_index(), jax.process_count(), source=source,
                                      start_batch=start_batch))

  # ---- Model, optimizer, state.
  fns = step_lib.ModelFns.create(model_cfg)
  o = config.optim
  lr_fn = optim.schedule(base_lr=o.base_lr, min_lr=o.min_lr, global_batch=config.global_batch,
                         warmup_steps=warmup, total_steps=total_steps)
  tx = optim.make_optimizer(lr_fn, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, clip_norm=o.clip_norm)
  abstract, _ = step_lib.abstract_state(fns, tx)
  shardings = step_lib.state_shardings(mesh, abstract)
  c = config.checkpoint
  mngr = ckpt.make_manager(workdir, every_steps=c.every_steps, keep=c.keep, keep_period=c.keep_period)
  if mngr.latest_step() is not None:
    state, start, data_iter, input_start = ckpt.restore(mngr, abstract, shardings, make_iter)
    logging.info('Resumed from step %d in %s', start, workdir)
  else:
    state, _ = step_lib.create_state(fns, tx, mesh, config.seed)
    start, data_iter, input_start = 0, make_iter(0), 0
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state['params']))
  logging.info('Model %s: %.2fM parameters; %d steps (%d per epoch), warmup %d', model_cfg.size,
               n_params / 1e6, total_steps, steps_per_epoch, warmup)

  # ---- Step.
  micro = config.micro_batches
  train_step = step_lib.make_train_step(fns, tx, lr_fn, drop_path=model_cfg.drop_path > 0)
  jitted, batch_shardings = step_lib.jit_train_step(train_step, mesh, shardings, {'video': 6, 'mask': 3})
  base_key = jax.random.key(config.seed)
  writer = metrics_lib.MetricWriter(workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, 'run_info.json'), 'w') as f:
      json.dump({'git_revision': git_revision(), 'mesh': dict(mesh.shape), 'devices': jax.device_count(),
                 'processes': jax.process_count(), 'parameters': n_params, 'total_steps': total_steps}, f,
                indent=2)
  preempt = _Preemption()
  eval_recon = jax.jit(lambda p, v, m: fns.module(p)(v, m)[0])

  # ---- Loop.
  history = []
  progress = metrics_lib.Progress(start, total_steps, config.global_batch, config.log_every, writer)

  def nonfinite(done, m):
    return NonFiniteLossError(
        f'non-finite loss ({float(m["loss"])}) or gradient norm ({float(m["grad_norm"])}) at step {done}; '
        f'the update was not applied and nothing after the last checkpoint '
        f'(step {mngr.latest_step()}) was saved. Lower the learning rate or enable clipping '
        f'(--config.optim.clip_norm).')

  # metrics read while the next step runs
  late = metrics_lib.OneStepLate(metrics_lib.step_recorder(history, writer, progress, nonfinite))
  compiled = None
  try:
    for step in range(start, total_steps):
      if config.profile_steps and step == config.profile_steps[0]:
        jax.profiler.start_trace(os.path.join(workdir, 'profile'))
      host = next(data_iter)
      batch = step_lib.to_global(host, micro, batch_shardings)
      key = jax.random.fold_in(base_key, step)
      if compiled is None:
        compiled = jitted.lower(state, batch, key).compile()
        rep = memory_report(compiled, state)
        logging.info('Memory per device: %s', ', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in rep.items()))
        if jax.process_index() == 0:
          with open(os.path.join(workdir, 'memory.json'), 'w') as f:
            json.dump(rep, f, indent=2)
      state, m = compiled(state, batch, key)
      done = step + 1
      if config.profile_steps and done == config.profile_steps[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
      late.push(done, m)
      viz_due = config.viz_every and jax.process_count() == 1 and (done % config.viz_every == 0 or
                                                                    done == total_steps)
      stop = preempt.requested
      if stop or viz_due or done == total_steps or done % config.checkpoint.every_steps == 0:
        late.flush()
      if viz_due:
        _write_reconstruction(workdir, writer, done, eval_recon, state['params'], host, model_cfg, mesh)
      if stop:
        ckpt.save(mngr, done, state, data_iter, input_start, force=True)
        mngr.wait_until_finished()
        logging.warning('Saved step %d after SIGTERM; exiting.', done)
        return {'steps': done, 'losses': history, 'preempted': True}
      ckpt.save(mngr, done, state, data_iter, input_start, force=done == total_steps)
    mngr.wait_until_finished()
    if len(history) >= 20:
      k = max(10, len(history) // 10)
      logging.info('Done: mean loss of the first %d steps of this run %.4f, of the last %d %.4f. '
                   'Checkpoint: %s', k, np.mean(history[:k]), k, np.mean(history[-k:]),
                   os.path.join(workdir, 'checkpoints', str(total_steps)))
  finally:
    preempt.restore()
    writer.close()
    mngr.close()
  return {'steps': total_steps, 'losses': history, 'preempted': False}


def _write_reconstruction(workdir, writer, step, eval_recon, params, host, model_cfg, mesh):
  n = min(4, host['video'].shape[0])
  video, mask = host['video'][:n], host['mask'][:n]
  rep = sharding.replicated(mesh)
  pred = np.asarray(jax.device_get(eval_recon(params, jax.device_put(jnp.asarray(video), rep),
                                              jax.device_put(jnp.asarray(mask), rep))))
  grid = viz.reconstruction_grid(video, mask, pred, model_cfg)
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, 'reconstructions'), exist_ok=True)
    Image.fromarray(grid).save(os.path.join(workdir, 'reconstructions', f'step_{step:07d}.png'))
    writer.image(step, 'reconstruction', grid)
