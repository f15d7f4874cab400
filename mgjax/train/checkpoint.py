"""orbax checkpoints of the train state together with the grain iterator state, and preemption.

One CheckpointManager per workdir (`workdir/checkpoints/<step>/{state,data_iter,input}`), asynchronous,
atomic (orbax writes to a temporary folder and renames it when complete), keeping the last `keep` and
every `keep_period`-th. Restoring uses abstract targets that carry the current shardings, so a run can
resume on another mesh. `Preemption` turns SIGTERM into a checkpoint at the next step boundary.
"""

from __future__ import annotations

import os
import signal
from typing import Callable, Iterator, Optional

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


def make_manager(workdir: str, *, every_steps: int, keep: int, keep_period: Optional[int],
                 async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=every_steps, max_to_keep=keep, keep_period=keep_period or None,
      enable_async_checkpointing=async_save, create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               item_names=('state', 'data_iter', 'input'), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, start_batch: int,
         force: bool = False) -> bool:
  """Saves the train state, the iterator's state and the global batch its dataset started at (the
  iterator's state counts from there)."""
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data_iter=grain.checkpoint.CheckpointSave(data_iter),
                                                 input=ocp.args.JsonSave({'start_batch': int(start_batch)})),
                   force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, shardings, make_iter: Callable[[int], Iterator],
            step: Optional[int] = None):
  """Restores (state, step, data iterator, the global batch its dataset starts at).

  make_iter(start_batch) builds the input iterator from global batch start_batch on. It is built where
  the saving run's started and its saved position restored; if that state does not fit this run (another
  number of processes or workers), a warning says so and it is built at batch `step` instead: the input
  streams are functions of the batch index, so both continue with the batches an uninterrupted run sees.
  """
  step = mngr.latest_step() if step is None else step
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
                        shardings)
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
  start_batch = 0
  if 'input' in (mngr.item_metadata(step) or {}):
    start_batch = int(mngr.restore(step, args=ocp.args.Composite(input=ocp.args.JsonRestore()))['input'][
        'start_batch'])
  data_iter = make_iter(start_batch)
  try:
    mngr.restore(step, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
    return state, step, data_iter, start_batch
  except (ValueError, KeyError, TypeError, IndexError) as e:  # other process or worker count
    logging.warning('Checkpoint %d: the input pipeline state does not fit this run (%s: %s). The model '
                    'state is restored; the input continues at batch %d, recomputed.', step,
                    type(e).__name__, e, step)
    return state, step, make_iter(step), step


class Preemption:
  """SIGTERM sets `requested`; the training loop saves at the next step boundary and exits."""

  def __init__(self):
    self.requested = False
    self._old = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint at the next step, then exiting.')
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._old)
