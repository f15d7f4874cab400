"""The trainer both training binaries run, read top to bottom as its phases:

    mesh -> input -> model, optimizer, state (restore or init) -> step -> loop

A `Task` (pretraining in train/pretrain.py, fine-tuning in train/finetune.py) supplies only what differs:
the model functions, the train step, the input pipeline, the initial parameters and its hooks (pictures of
reconstructions). Everything else exists once, here: the schedule and optimizer, the checkpoint manager,
restore-or-init with the input state, the run files, the memory report, and the step loop with its
one-step-late metrics, progress, checkpoints, SIGTERM, the non-finite stop, profiling, periodic hooks and
the evaluators of config.evals every config.eval_every steps.

A second run with the same workdir resumes from its latest checkpoint; SIGTERM saves and exits; a
non-finite loss stops the run before the bad state can be saved.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mgjax import errors
from mgjax import files
from mgjax import layout
from mgjax.data import demo
from mgjax.evals import common as evals_common
from mgjax.evals import features
from mgjax.models import functional, videomae
from mgjax.train import checkpoint as ckpt
from mgjax.train import metrics as metrics_lib
from mgjax.train import optim
from mgjax.train import sharding
from mgjax.train import step as step_lib


class NonFiniteLossError(errors.UserError, FloatingPointError):
  pass


@dataclasses.dataclass
class Hook:
  """run(step, state, host batch, metric writer) every `every` steps and at the last step (never when
  every is 0); after the step's metrics are read and before its checkpoint."""
  every: int
  run: Callable[[int, dict, dict, metrics_lib.MetricWriter], None]


@dataclasses.dataclass
class Task:
  """What one kind of training supplies to the trainer."""
  name: str  # the log's name for the run: 'Pretraining', 'Fine-tuning'
  fns: functional.ModelFns
  epoch_size: int  # examples an epoch reads once (records, or labelled clips), before num_repeats
  make_iter: Callable[[int], Iterator[dict]]  # start_batch -> this process's host batches from there
  batch_ndims: dict  # batch key -> dimensions of its global array (micro-batch, clip, ...)
  make_step: Callable  # (tx, lr_fn) -> step(state, batch, key) -> (state, metrics)
  init_params: Optional[Callable[[int], dict]] = None  # on the host (reads files); None: fns.init, jitted
  run_info: Callable[[], dict] = dict  # more fields of run_info.json
  hooks: Sequence[Hook] = ()


def data_dir(config, workdir: str) -> str:
  """config.data.data_dir, or the demo sample built into the workdir when it is empty."""
  return config.data.data_dir or demo.prepare(workdir, config.demo_sample.to_dict())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, make_task) -> dict:
  """make_task(config, workdir, mesh, data_dir) -> Task. Returns {'steps', 'losses' (of this run),
  'evals' {step: {name: value}}, 'preempted'}."""
  if not config.data.data_dir:
    demo.check_workdir(workdir)  # a config error, before any request to a bucket
  files.writable_dir(workdir, '--workdir')  # before the demo builds its records there
  data = data_dir(config, workdir)
  # ---- Mesh.
  mesh = sharding.make_mesh(tuple(config.mesh))
  sharding.check_batch(mesh, config.global_batch, config.micro_batches)
  logging.info('Mesh %s over %d devices (%d processes)', dict(mesh.shape), jax.device_count(),
               jax.process_count())

  # ---- Input, model.
  task = make_task(config, workdir, mesh, data)
  steps_per_epoch = max(1, task.epoch_size * config.data.num_repeats // config.global_batch)
  lr_fn, total_steps, warmup = optim.schedule_from_config(config, steps_per_epoch)
  evaluators = make_evaluators(config, task.fns, mesh, data) if config.eval_every else {}

  # ---- Optimizer, state: restored, or initialised into its shardings.
  abstract_params = task.fns.abstract_params()
  tx = optim.from_config(config.optim, lr_fn, abstract_params, videomae.SIZES[task.fns.cfg.size].depth)
  abstract, init = step_lib.abstract_state(task.fns, tx)
  shardings = step_lib.state_shardings(mesh, abstract)
  c = config.checkpoint
  mngr = ckpt.make_manager(workdir, every_steps=c.every_steps, keep=c.keep, keep_period=c.keep_period)
  restored = ckpt.restore(mngr, abstract, shardings, task.make_iter)
  if restored is not None:
    state, start, data_iter, input_start = restored
    logging.info('Resumed from step %d in %s', start, workdir)
  else:
    if task.init_params is None:
      state = jax.jit(init, static_argnums=0, out_shardings=shardings)(config.seed)
    else:  # reads files: outside jit, then placed into the shardings
      params = task.init_params(config.seed)
      state = jax.device_put({'step': jnp.zeros((), jnp.int32), 'params': params,
                              'opt_state': tx.init(params)}, shardings)
    start, data_iter, input_start = 0, task.make_iter(0), 0
  n_params = videomae.count_params(abstract_params)
  logging.info('%s %s: %.2fM parameters; %d steps (%d per epoch), warmup %d', task.name, task.fns.cfg.size,
               n_params / 1e6, total_steps, steps_per_epoch, warmup)

  # ---- Step.
  jitted, batch_shardings = step_lib.jit_train_step(task.make_step(tx, lr_fn), mesh, shardings,
                                                    task.batch_ndims)
  base_key = jax.random.key(config.seed)
  writer = metrics_lib.MetricWriter(workdir)
  if jax.process_index() == 0:
    info = {'git_revision': git_revision(), 'mesh': dict(mesh.shape), 'devices': jax.device_count(),
            'processes': jax.process_count(), 'parameters': n_params, 'total_steps': total_steps,
            **task.run_info()}  # before the file is opened: a resumed task reads the first run's
    layout.write_run_files(workdir, config, info)
  preempt = ckpt.Preemption()
  model_item = layout.model_item(task.fns.cfg, task.fns.num_classes)

  # ---- Loop.
  history, evals = [], {}
  progress = metrics_lib.Progress(start, total_steps, config.global_batch, config.log_every, writer)

  def nonfinite(done, m):
    return NonFiniteLossError(
        f'non-finite loss ({float(m["loss"])}) or gradient norm ({float(m["grad_norm"])}) at step {done}; '
        f'the update was not applied and nothing after the last checkpoint '
        f'(step {mngr.latest_step()}) was saved. Lower the learning rate or enable clipping '
        f'(--config.optim.clip_norm).')

  # metrics read while the next step runs
  late = metrics_lib.OneStepLate(metrics_lib.step_recorder(history, writer, progress, nonfinite))
  hooks = list(task.hooks)
  if evaluators:
    hooks.append(Hook(config.eval_every, lambda step, state, host, writer: evals.update(
        {step: run_evaluators(evaluators, state['params'], step, writer)})))
  compiled = None
  profile = tuple(config.profile_steps)
  try:
    for step in range(start, total_steps):
      if profile and step == profile[0]:
        jax.profiler.start_trace(str(layout.run_file(workdir, 'profile')))
      host = next(data_iter)
      batch = step_lib.to_global(host, config.micro_batches, batch_shardings)
      key = jax.random.fold_in(base_key, step)
      if compiled is None:
        compiled = jitted.lower(state, batch, key).compile()
        write_memory_report(workdir, compiled, state)
      state, m = compiled(state, batch, key)
      done = step + 1
      if profile and done == profile[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
      late.push(done, m)
      due = [h for h in hooks if h.every and (done % h.every == 0 or done == total_steps)]
      stop = preempt.reached(done)
      if stop or due or done == total_steps or done % c.every_steps == 0:
        late.flush()
      for h in due:
        h.run(done, state, host, writer)
      if stop:
        ckpt.save(mngr, done, state, data_iter, input_start, model_item, force=True)
        mngr.wait_until_finished()
        logging.warning('Saved step %d after SIGTERM; exiting.', done)
        return {'steps': done, 'losses': history, 'evals': evals, 'preempted': True}
      if ckpt.save(mngr, done, state, data_iter, input_start, model_item,
                   force=done == total_steps):
        writer.flush()  # a bucket's metrics reach this checkpoint
    mngr.wait_until_finished()
    if len(history) >= 20:
      k = max(10, len(history) // 10)
      logging.info('Done: mean loss of the first %d steps of this run %.4f, of the last %d %.4f. '
                   'Checkpoint: %s', k, np.mean(history[:k]), k, np.mean(history[-k:]),
                   layout.checkpoints_dir(workdir) / str(total_steps))
  finally:
    preempt.restore()
    writer.close()
    mngr.close()
  return {'steps': total_steps, 'losses': history, 'evals': evals, 'preempted': False}


# ---- Evaluation during training ------------------------------------------------------------------------

def make_evaluators(config, fns: functional.ModelFns, mesh, data_dir_: str) -> dict:
  """The evaluators of config.evals on config.eval (the clip records, a fixed subset kept in memory),
  called with the sharded train parameters: every process feeds the same clips, replicated."""
  e = config.eval
  try:
    clips = evals_common.Clips.from_records(
        e.data_dir or data_dir_, e.name, frames=fns.cfg.frames, size=fns.cfg.image_size,
        stride=e.stride or config.data.stride, num_clips=e.num_clips, batch=e.batch, limit=e.limit)
  except errors.DataError as err:
    raise errors.ConfigError(f'config.evals needs the `{e.name}` records ({err}); set config.eval.data_dir, '
                             f'or --config.eval_every=0 to train without evaluations') from None
  rep = sharding.replicated(mesh)

  def replicated(f):
    g = jax.jit(f, out_shardings=rep)
    return lambda params, video: g(params, jax.make_array_from_process_local_data(rep, np.asarray(video)))

  fn = {'features': replicated(features.feature_fn(fns, e.pooling)), 'tokens': replicated(features.tokens_fn(fns))}
  if fns.num_classes:
    fn['logits'] = replicated(lambda p, v: fns.module(p)(v).astype(jnp.float32))
  return evals_common.build(config.evals, clips, fn)


def run_evaluators(evaluators: dict, params, step: int, writer: metrics_lib.MetricWriter) -> dict:
  out = {}
  for name, ev in evaluators.items():
    out.update({f'{name}/{k}': v for k, v in ev.run(params)})
  writer.scalars(step, {f'eval/{k}': v for k, v in out.items()})
  logging.info('step %d: %s', step, ', '.join(f'{k} {v:.4g}' for k, v in out.items()))
  return out


# ---- Run files -----------------------------------------------------------------------------------------

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


def write_memory_report(workdir: str, compiled, state):
  """Bytes per device of parameters, optimizer state and the compiled step's buffers: memory.json."""
  ma = compiled.memory_analysis()
  rep = {'param_bytes_per_device': _bytes_per_device(state['params']),
         'optimizer_bytes_per_device': _bytes_per_device(state['opt_state'])}
  if ma is not None:
    rep.update(argument_bytes=int(ma.argument_size_in_bytes), output_bytes=int(ma.output_size_in_bytes),
               activation_temp_bytes=int(ma.temp_size_in_bytes))
  logging.info('Memory per device: %s', ', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in rep.items()))
  if jax.process_index() == 0:
    files.write_json(layout.run_file(workdir, 'memory'), rep)
