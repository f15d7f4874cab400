"""The one owner of a run directory's layout. Every path under a workdir is named here, and every reader
of a checkpoint (resume, fine-tuning's init, evaluation, export) finds its step and its model through here.

  WORKDIR/config.json            the run's config (process 0, at every start)
  WORKDIR/run_info.json          git revision, mesh, processes, parameters, the task's fields
  WORKDIR/memory.json, metrics.jsonl, tensorboard/, reconstructions/, profile/, labelled_subset.json
  WORKDIR/checkpoints/STEP/      one orbax checkpoint (train/checkpoint.py writes it):
      state/       {'step', 'params', 'opt_state'}
      data_iter/   the grain iterator's position
      input/       {'start_batch'}: the global batch the iterator's stream started at
      model/       {'model': videomae.ModelConfig fields, 'num_classes'}: what the weights are, so that a
                   step directory copied on its own still loads
  WORKDIR/checkpoints_unreadable/STEP   a checkpoint whose data was damaged, set aside (never deleted)

A step is complete when orbax has finalised it (renamed from its temporary name on a filesystem,
`commit_success.txt` in a bucket); the readers only ever see complete steps.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np

from mgjax import errors
from mgjax import files
from mgjax.models import videomae

CHECKPOINTS = 'checkpoints'
UNREADABLE = 'checkpoints_unreadable'
ITEMS = ('state', 'data_iter', 'input', 'model')
MODEL_ITEM_FILE = 'metadata'  # orbax's JsonCheckpointHandler writes an item's JSON under this name


class CheckpointError(errors.UserError, ValueError):
  """A checkpoint path that is missing, unfinished or not a checkpoint."""


def checkpoints_dir(workdir) -> files.epath.Path:
  return files.absolute(workdir) / CHECKPOINTS


def unreadable_dir(workdir) -> files.epath.Path:
  return files.absolute(workdir) / UNREADABLE


RUN_FILES = {'config': 'config.json', 'run_info': 'run_info.json', 'memory': 'memory.json',
             'metrics': 'metrics.jsonl', 'tensorboard': 'tensorboard', 'reconstructions': 'reconstructions',
             'profile': 'profile', 'labelled_subset': 'labelled_subset.json'}


def run_file(workdir, what: str) -> files.epath.Path:
  """The path of one of the RUN_FILES of a workdir."""
  return files.path(workdir) / RUN_FILES[what]


def config_file(workdir) -> files.epath.Path:
  return run_file(workdir, 'config')


def run_info_file(workdir) -> files.epath.Path:
  return run_file(workdir, 'run_info')


def read_run_info(workdir) -> dict:
  return files.read_json(run_info_file(workdir), {})


def write_run_files(workdir, config, info: dict):
  """config.json and run_info.json (by process 0)."""
  files.write_atomic(config_file(workdir), lambda f: f.write(config.to_json_best_effort(indent=2)))
  files.write_json(run_info_file(workdir), info)


# ---- steps -----------------------------------------------------------------------------------------------

def complete_steps(workdir) -> list[int]:
  """The steps orbax has finished writing, ascending."""
  from orbax.checkpoint import path as ocp_path  # pylint: disable=g-import-not-at-top
  return sorted(ocp_path.step.checkpoint_steps(checkpoints_dir(workdir)))


def is_workdir(p) -> bool:
  return (files.path(p) / CHECKPOINTS).is_dir()


def is_step_dir(p) -> bool:
  """An mgjax checkpoint step (complete or not)."""
  p = files.path(p)
  return 'orbax-checkpoint-tmp' in p.name or (p / 'state').is_dir()


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  path: files.epath.Path  # WORKDIR/checkpoints/STEP, or a step directory copied elsewhere
  step: Optional[int]


def resolve(path) -> Checkpoint:
  """A workdir (its latest complete step) or a step directory -> the checkpoint. Errors name the path when
  it is missing, unfinished or not a checkpoint."""
  p = files.absolute(path)
  if not p.exists():
    raise CheckpointError(f'no such checkpoint: {p}')
  if is_workdir(p):
    steps = complete_steps(p)
    if not steps:
      raise CheckpointError(f'{p} has no finished checkpoint in {p / CHECKPOINTS}')
    return Checkpoint(p / CHECKPOINTS / str(steps[-1]), steps[-1])
  if 'orbax-checkpoint-tmp' in p.name:
    raise CheckpointError(f'{p} is an unfinished checkpoint (the run stopped while writing it)')
  if not (p / 'state').is_dir():
    raise CheckpointError(f'{p} is not an mgjax checkpoint (no state/ inside)')
  return Checkpoint(p, int(p.name) if p.name.isdigit() else None)


def pin(path: str) -> str:
  """A workdir -> its latest checkpoint at this moment (WORKDIR/checkpoints/STEP), so that what a run
  reads and records stays the same while the workdir trains on; any other path as it is. With several
  processes, every one gets the step process 0 found, even if the workdir saved another meanwhile."""
  if not is_workdir(path):
    return path
  read = resolve(path).path
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    read = read.parent / str(int(multihost_utils.broadcast_one_to_all(np.int32(read.name))))
  return str(read)


# ---- the model a checkpoint holds ------------------------------------------------------------------------

def model_item(model: videomae.ModelConfig, num_classes: Optional[int]) -> dict:
  """What every checkpoint step stores as its `model` item."""
  return {'model': dataclasses.asdict(model), 'num_classes': num_classes}


def _model_config(fields: dict) -> videomae.ModelConfig:
  known = {f.name for f in dataclasses.fields(videomae.ModelConfig)}
  return videomae.ModelConfig(**{k: v for k, v in fields.items() if k in known})


def model_of(ckpt: Checkpoint) -> tuple[videomae.ModelConfig, Optional[int]]:
  """(model config, number of classes or None) of a checkpoint: from its own `model` item, or, for a
  step written without one, from the config.json and run_info.json of the workdir around it."""
  item = files.read_json(ckpt.path / 'model' / MODEL_ITEM_FILE)
  if item is not None:
    return _model_config(item['model']), item.get('num_classes') or None
  workdir = ckpt.path.parent.parent
  cfg = files.read_json(config_file(workdir))
  if cfg is None:
    raise CheckpointError(f'{ckpt.path} has no model/ item and {config_file(workdir)} is missing: cannot tell '
                          f'the model of the checkpoint')
  info = read_run_info(workdir)
  return _model_config(cfg['model']), info.get('num_classes') or cfg.get('num_classes') or None
