"""orbax checkpoints of the train state together with the grain iterator state.

One CheckpointManager per workdir (`workdir/checkpoints/<step>/{state,data_iter}`), asynchronous,
atomic (orbax writes to a temporary folder and renames it when complete), keeping the last `keep` and
every `keep_period`-th. Restoring uses abstract targets that carry the current shardings, so a run can
resume on another mesh.
"""

from __future__ import annotations

import os
from typing import Optional

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
                               item_names=('state', 'data_iter'), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, force: bool = False) -> bool:
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data_iter=grain.checkpoint.CheckpointSave(data_iter)),
                   force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, shardings, data_iter, step: Optional[int] = None):
  """Restores (state, step). The iterator is restored in place; if its saved state does not fit this
  run (another number of processes or workers), it is left at a fresh position and a warning says so."""
  step = mngr.latest_step() if step is None else step
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
                        shardings)
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
  try:
    mngr.restore(step, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
    return state, step, True
  except (ValueError, KeyError, TypeError, IndexError) as e:  # other process or worker count
    logging.warning('Checkpoint %d: the input pipeline state does not fit this run (%s: %s). The model '
                    'state is restored; the input continues from a new deterministic position.', step,
                    type(e).__name__, e)
    return state, step, False
