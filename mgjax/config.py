"""The pretraining config schema with the official VideoMAE recipe as defaults; configs/*.py override it.

Every field can be set on the command line (--config.optim.base_lr=3e-4); the dict is locked, so a
misspelt field is an error that names it (`parse_flags`, which the binaries parse their flags with).
"""

import difflib
import importlib.util
import os
import sys

import ml_collections
from absl import flags

# The sample generated when data_dir is empty (tfds_imigue3k.sample.generate arguments).
DEMO_SAMPLE = dict(subjects=8, videos_per_subject=2, frames=500, width=320, height=180, venues=4, seed=0,
                   test_fraction=0.375)
# The sample of the README's flow (configs/demo.py and configs/finetune_demo.py): 37 train and 27 test
# subjects, with the official protocol's ids.
DEMO_FLOW_SAMPLE = dict(DEMO_SAMPLE, subjects=64, test_fraction=0.42)


def pretrain_base(size: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = dict(size=size, frames=16, image_size=224, patch=16, tubelet=2, decoder_depth=None,
                 drop_path=0.0, dtype='bfloat16', attention='auto', remat='none', mask_ratio=0.9,
                 mask_type='tube', decoder_mask_ratio=0.0)
  c.data = dict(
      data_dir='',  # empty: generate the sample dataset and build it into the workdir (demo)
      name='pretrain', split='train', stride=4,
      sampling='quality', static_motion=5e-5, static_keep=0.1,  # 'uniform' is the ablation
      scales=(1.0, 0.875, 0.75, 0.66), flip=False, num_repeats=4,
      workers=8, prefetch=2)  # workers: grain processes; -1: a core each but one (memory permitting); 0: none
  c.demo_sample = dict(DEMO_SAMPLE)
  c.global_batch = 512
  c.micro_batches = 1  # gradient accumulation: the global batch in this many sequential pieces
  c.mesh = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices
  c.optim = dict(base_lr=1.5e-4, min_lr=1e-5, b1=0.9, b2=0.95, weight_decay=0.05, clip_norm=0.0,
                 warmup_epochs=40.0, warmup_steps=-1)  # warmup_steps >= 0 overrides warmup_epochs
  c.epochs = 800.0
  c.total_steps = 0  # > 0 overrides epochs
  c.checkpoint = dict(every_steps=1000, keep=3, keep_period=0)  # keep_period: also keep every n-th step
  c.log_every = 50
  c.viz_every = 5000
  c.eval_every = 5000  # steps between the evaluations of c.evals; 0: none
  # The clip records evaluations read (data_dir '': those of c.data; stride 0: c.data.stride): `limit`
  # clips per split, evenly spaced, decoded once and kept in memory.
  c.eval = dict(data_dir='', name='clips', stride=0, num_clips=1, limit=256, batch=32, pooling='mean')
  c.evals = dict(knn=dict(type='knn', k=20, temperature=0.07))  # frozen-feature kNN, train -> test clips
  c.profile_steps = ()  # (start, stop): write a profiler trace of these steps to workdir/profile
  # None: the size's own decoder depth / width; typed placeholders so --config.model.decoder_depth=4 works
  c.model.decoder_depth = ml_collections.config_dict.placeholder(int)
  c.model.decoder_width = ml_collections.config_dict.placeholder(int)
  return c.lock()


def finetune_base(size: str) -> ml_collections.ConfigDict:
  """The VideoMAE fine-tuning recipe (docs/reference.md) on the `clips` records."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init = ''  # mgjax workdir / checkpoint, exported directory (hf, official, orbax); '' = from scratch
  c.head_init_scale = 0.001
  c.label_fraction = 1.0  # < 1: semi-supervised, a seeded class-stratified subset of the training clips
  c.model = dict(size=size, frames=16, image_size=224, patch=16, tubelet=2, decoder_depth=None,
                 drop_path=0.2 if size == 'H' else 0.1, dtype='bfloat16', attention='auto', remat='none',
                 mask_ratio=0.9, mask_type='tube')
  c.data = dict(data_dir='', name='clips', stride=4, crop_scale=(0.08, 1.0), flip=True, randaug_n=4,
                randaug_m=7, erase_prob=0.25,
                num_repeats=2, class_balanced=False, workers=8)
  c.demo_sample = dict(DEMO_SAMPLE)
  c.augment = dict(mixup=0.8, cutmix=1.0, label_smoothing=0.1)
  c.global_batch = 64
  c.micro_batches = 1
  c.mesh = (-1, 1, 1)
  c.optim = dict(base_lr=1e-3, min_lr=1e-6, b1=0.9, b2=0.999, weight_decay=0.05, layer_decay=0.75,
                 clip_norm=0.0, warmup_epochs=5.0, warmup_steps=-1)
  c.epochs = 50.0
  c.total_steps = 0
  c.checkpoint = dict(every_steps=1000, keep=3, keep_period=0)
  c.log_every = 50
  c.eval_every = 1000  # steps between the evaluations of c.evals; 0: none
  c.eval = dict(data_dir='', name='clips', stride=0, num_clips=1, limit=0, batch=32, pooling='mean')
  c.evals = dict(test=dict(type='recognition', test_clips=1, test_crops=1))  # single-view top-1
  c.profile_steps = ()
  # None: the size's own decoder depth / width; typed placeholders so --config.model.decoder_depth=4 works
  c.model.decoder_depth = ml_collections.config_dict.placeholder(int)
  c.model.decoder_width = ml_collections.config_dict.placeholder(int)
  return c.lock()


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (its `parse_flags_with_usage`), with one-line errors for a --config file that
  does not exist and for a --config.KEY override that names no field of the config.

  ml_collections raises those deep in flag parsing or at first use, which absl would show as tracebacks.
  """
  try:
    args = flags.FLAGS(argv)
  except flags.Error as e:
    _fatal(str(e))
  except (AttributeError, KeyError):
    try:
      message = unknown_override(argv, _config_file(argv))
    except Exception:  # pylint: disable=broad-except
      message = None  # the config file itself does not load: its own error says why
    if message is None:
      raise
    _fatal(message)
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path.partition(':')[0]):
    _fatal(f'--config={path}: no such config file (relative to {os.getcwd()})')
  return args


def _fatal(message: str):
  sys.stderr.write(f'FATAL Flags parsing error: {message}\nPass --helpshort or --helpfull to see help on flags.\n')
  sys.exit(1)


def _config_path(argv: list[str]) -> str | None:
  return next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)


def _config_file(argv: list[str]):
  """The config that --config=PATH[:ARG] of argv names, loaded as ml_collections loads it."""
  path = _config_path(argv)
  return None if path is None else load_config_file(path)


def load_config_file(path: str):
  """get_config() of the config file PATH[:ARG] (one config file building on another uses this)."""
  path, _, arg = path.partition(':')
  spec = importlib.util.spec_from_file_location('_mgjax_config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def unknown_override(argv: list[str], config) -> str | None:
  """What is wrong with the first --config.A.B=V of argv that names no field of `config`; None if none."""
  if not isinstance(config, ml_collections.ConfigDict):
    return None
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--'):].split('=', 1)[0].split('.')
    node = config
    for depth, part in enumerate(path[1:], start=1):
      here = '.'.join(path[:depth])
      if not isinstance(node, ml_collections.ConfigDict):
        return f'{arg}: {here} is a value ({type(node).__name__}), not a group of fields'
      if part not in node:
        keys = sorted(node.keys())
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f' (did you mean {here}.{close[0]}?)' if close else ''
        return f'{arg}: {here} has no field {part!r}{hint}. Its fields: {", ".join(keys)}'
      node = node[part]
  return None
