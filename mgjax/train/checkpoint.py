"""orbax checkpoints of the train state together with the grain iterator state, and preemption.

One CheckpointManager per workdir (`workdir/checkpoints/<step>/{state,data_iter,input,model}`, the layout
mgjax/layout.py describes), asynchronous,
atomic (orbax writes to a temporary folder and renames it when complete), keeping the last `keep` and
every `keep_period`-th. Restoring uses abstract targets that carry the current shardings, so a run can
resume on another mesh. `Preemption` turns SIGTERM into a checkpoint at the next step boundary.
"""

from __future__ import annotations

import json
import os
import signal
import time
import zlib
from typing import Callable, Iterator, Optional

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from mgjax import errors
from mgjax import files
from mgjax import layout
from mgjax.models import convert


def make_manager(workdir: str, *, every_steps: int, keep: int, keep_period: Optional[int],
                 async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=every_steps, max_to_keep=keep, keep_period=keep_period or None,
      enable_async_checkpointing=async_save, create=True)
  return ocp.CheckpointManager(layout.checkpoints_dir(workdir), item_names=layout.ITEMS, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, start_batch: int, model: dict,
         force: bool = False) -> bool:
  """Saves the train state, the iterator's state, the global batch its dataset started at (the
  iterator's state counts from there) and `model` (layout.model_item: what the weights are)."""
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data_iter=grain.checkpoint.CheckpointSave(data_iter),
                                                 input=ocp.args.JsonSave({'start_batch': int(start_batch)}),
                                                 model=ocp.args.JsonSave(model)),
                   force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, shardings, make_iter: Callable[[int], Iterator]):
  """Restores (state, step, data iterator, the global batch its dataset starts at) from the newest
  checkpoint that restores.

  A checkpoint is read whole (train state, input start, iterator position) or tried again: a failure to
  read (a bucket's 5xx once its client's own retries are spent, a timeout, a dropped connection) is read
  again RESTORE_TRIES times, then stops the run with nothing moved; so does an error that is neither a
  failure to read nor damage. A complete checkpoint whose data is damaged (a file missing or truncated, a
  checksum or decoding error) is named in one warning, moved aside to `checkpoints_unreadable/<step>`
  beside the checkpoints (never deleted), and the next older one is tried. One whose arrays have other
  shapes than this run's state (another model or optimizer) is a user error, not corruption: nothing is
  moved.

  make_iter(start_batch) builds the input iterator from global batch start_batch on. It is built where
  the saving run's started and its saved position restored; if that state does not fit this run (another
  number of processes or workers), a warning says so and it is built at batch `step` instead: the input
  streams are functions of the batch index, so both continue with the batches an uninterrupted run sees.
  """
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
                        shardings)
  for step in sorted(mngr.all_steps(), reverse=True):
    _check_shapes(mngr, step, abstract_state)
    restored = _read_step(mngr, step, target, make_iter)
    if restored is not None:
      return restored
  return None


def _read(mngr: ocp.CheckpointManager, step: int, target, make_iter: Callable[[int], Iterator]):
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
    if classify(e) == 'transient':
      raise
    logging.warning('Checkpoint %d: the input pipeline state does not fit this run (%s: %s). The model '
                    'state is restored; the input continues at batch %d, recomputed.', step,
                    type(e).__name__, e, step)
    return state, step, make_iter(step), step


# TensorStore reports errors as ValueError('CODE: ...') with absl status codes; the Python storage clients
# raise their own kinds. Damaged data: a file missing, shorter than its index says, or failing its checksum
# or decoding. A failure to read: the storage did not answer or refused for now (a bucket's 5xx or 429, a
# timeout, a dropped connection: what the storage clients raise once their own retries run out). Anything
# else is neither, and stops the run without moving anything.
DAMAGED_CODES = ('NOT_FOUND', 'OUT_OF_RANGE', 'DATA_LOSS')
TRANSIENT_CODES = ('UNAVAILABLE', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED', 'ABORTED')
RESTORE_TRIES = 4  # attempts of a restore that fails to read, 2, 4 and 8 s apart


def classify(error: BaseException) -> str:
  """'damaged', 'transient' or 'other', from the error and the errors it was raised from."""
  chain, e = [], error
  while e is not None and len(chain) < 16:
    chain.append(e)
    e = e.__cause__ or e.__context__
  for e in chain:
    text = str(e).lstrip()
    if isinstance(e, (TimeoutError, ConnectionError)) or text.startswith(TRANSIENT_CODES) or (
        type(e).__module__.startswith('aiohttp')) or _transient_http_status(e):
      return 'transient'
    if isinstance(e, (FileNotFoundError, EOFError, json.JSONDecodeError, zlib.error)) or (
        text.startswith(DAMAGED_CODES)):
      return 'damaged'
  return 'other'


def _transient_http_status(e: BaseException) -> bool:
  """An HTTP error the storage answered with once its client's own retries ran out (gcsfs's HttpError
  carries `code`): a server error, a timeout or too many requests."""
  code = getattr(e, 'code', None)
  try:
    code = int(code)
  except (TypeError, ValueError):
    return False
  return 500 <= code < 600 or code in (408, 429)


def _read_step(mngr: ocp.CheckpointManager, step: int, target, make_iter: Callable[[int], Iterator]):
  """What `restore` returns, read from checkpoint `step`, or None when its data is damaged (it is then set
  aside). A failure to read is tried again RESTORE_TRIES times, then stops the run with the checkpoint
  left where it is."""
  for attempt in range(RESTORE_TRIES):
    try:
      return _read(mngr, step, target, make_iter)
    except Exception as e:  # pylint: disable=broad-except  (TensorStore, orbax and gcsfs raise several kinds)
      kind, error = classify(e), e
    where = files.path(mngr.directory) / str(step)
    first = errors.first_line(error)
    if kind == 'damaged':
      _set_aside(mngr, step, error)
      return None
    if kind == 'other':
      raise errors.UserError(
          f'{where} does not restore ({type(error).__name__}: {first}), and the error does not say its data '
          f'is damaged: nothing was moved. If its files are damaged, move {where} out of '
          f'{where.parent} and run again.') from error
    if attempt + 1 < RESTORE_TRIES:
      logging.warning('Checkpoint %s: reading failed (%s: %s); trying again in %d s.', where,
                      type(error).__name__, first, 2 ** (attempt + 1))
      time.sleep(2 ** (attempt + 1))
  raise errors.UserError(f'{where} could not be read in {RESTORE_TRIES} tries ({type(error).__name__}: '
                         f'{first}): nothing was moved; check the storage (network, credentials) and run again.')


def _check_shapes(mngr: ocp.CheckpointManager, step: int, abstract_state):
  try:
    meta = mngr.item_metadata(step)['state']
    saved = convert.shapes(getattr(meta, 'tree', meta))
  except Exception:  # pylint: disable=broad-except  unreadable metadata: the restore will say
    return
  where = files.path(mngr.directory) / str(step)
  convert.check_fit(saved, convert.shapes(abstract_state), str(where), missing_ok=True, extra_ok=True,
                    hint=f'the workdir holds another model or optimizer: use another --workdir, or the config '
                         f'it was written with, {layout.config_file(files.path(mngr.directory).parent)}')


def _set_aside(mngr: ocp.CheckpointManager, step: int, error: Exception):
  src = files.path(mngr.directory) / str(step)
  dst = layout.unreadable_dir(files.path(mngr.directory).parent) / str(step)
  logging.warning('Checkpoint %s does not restore (%s: %s); moved to %s, trying the one before.', src,
                  type(error).__name__, errors.first_line(error), dst)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'checkpoint {step} read')
  if jax.process_index() == 0:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst if not dst.exists() else dst.parent / f'{step}.{os.getpid()}')
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'checkpoint {step} set aside')
  mngr.reload()


class Preemption:
  """Whether to save and exit after a step, agreed by every process.

  One process: SIGTERM sets a flag, and the loop saves at the next step boundary. Several processes:
  JAX's coordination service (jax.distributed) takes the preemption notice (SIGTERM to any one process,
  or the TPU runtime's own) and agrees on the step every process saves at,
  `multihost_utils.reached_preemption_sync_point`, as MaxText's checkpointing does; every process asks
  it after every step, and all of them get True at the same step.
  """

  def __init__(self):
    self.requested = False
    self._multi = jax.process_count() > 1
    self._old = None if self._multi else signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint at the next step, then exiting.')
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether every process saves after `step` and exits."""
    if self._multi:
      if multihost_utils.reached_preemption_sync_point(step):
        logging.warning('Preemption notice: every process saves step %d, then exits.', step)
        self.requested = True
    return self.requested

  def restore(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
