"""Evaluators as plug-ins: one interface for every task, built from the config's list.

Every task module (`knn`, `linear_probe`, `retrieval`, `emotion`, `recognition`) defines

    Evaluator(clips, predict_fns, **cfg)
      .run(params)       -> iterator of (metric, value): what training logs every eval_every steps
      .evaluate(params)  -> the task's whole result, a JSON-able dict (its entry of results.json)
      .predictions       -> after evaluate: (predicted class, label, subject id) per test clip, or None

`clips` (a `Clips`) is the labelled clip records the task reads and their frozen features; `predict_fns`
maps 'features' to f(params, video) -> (B, D) pooled features and, for a classifier, 'logits' to
f(params, video) -> (B, num_classes). `build(config.evals, ...)` makes the evaluators a config lists:

    config.evals.knn = dict(type='knn', k=20, temperature=0.07)

both in `mgjax.evaluate` and, every `eval_every` steps, in the trainer (written as eval/NAME/METRIC).
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterator, Optional

import numpy as np

from mgjax import errors
from mgjax.data import records
from mgjax.evals import features as features_lib

TYPES = ('knn', 'linear_probe', 'retrieval', 'emotion', 'recognition')
SPLITS = ('train', 'test')


class Clips:
  """Labelled clip records (train and test splits) as evaluators read them: windows, metadata, the
  number of classes (from the dataset's metadata), the protocol and frozen features.

  limit > 0 takes that many clips per split, evenly spaced over it, and keeps their decoded windows in
  memory: the fixed subset evaluated again and again during training. cache_dir keeps features on disk,
  keyed on cache_key (checkpoint, weights, sampling) and the split: the evaluation binary's cache.
  """

  def __init__(self, sources: dict, num_classes: int, *, frames: int, size: int, stride: int = 4,
               num_clips: int = 2, batch: int = 16, limit: int = 0, cache_dir: Optional[str] = None,
               cache_key: Optional[dict] = None, protocol: Optional[dict] = None):
    self.sources, self.num_classes, self.protocol = sources, num_classes, protocol or {}
    self.frames, self.size, self.stride, self.num_clips, self.batch = frames, size, stride, num_clips, batch
    self.limit, self.cache_dir, self.cache_key = limit, cache_dir, cache_key
    self._kept = {}  # (split, windows, crops) -> [(views, meta)] when limit > 0
    self._memo = (None, None)  # (params, features) of the last call

  @classmethod
  def from_records(cls, data_dir: str, name: str = 'clips', **kw) -> 'Clips':
    """The train and test splits of data_dir's `name` records, with the builder's protocol."""
    sources = {s: records.data_source(data_dir, name, s) for s in SPLITS}
    return cls(sources, records.num_classes(sources['train']), protocol=records.protocol(data_dir, name),
               **kw)

  def indices(self, split: str) -> np.ndarray:
    n = len(self.sources[split])
    if not self.limit or self.limit >= n:
      return np.arange(n)
    return np.unique(np.linspace(0, n - 1, self.limit).round().astype(int))

  def views(self, split: str, windows: int, crops: int = 1) -> Iterator[tuple[np.ndarray, dict]]:
    """(uint8 (windows * crops, frames, size, size, 3), metadata) of every clip, window-major."""
    key = (split, windows, crops)
    if key in self._kept:
      yield from self._kept[key]
      return
    kept = [] if self.limit else None
    source, idx = self.sources[split], self.indices(split)
    for j in features_lib.progress(len(idx), f'{split} clips'):
      r = source[int(idx[j])]
      item = (features_lib.clip_views(r, self.frames, self.stride, windows, self.size, crops),
              features_lib.metadata(r))
      if kept is not None:
        kept.append(item)
      yield item
    if kept is not None:
      self._kept[key] = kept

  def features(self, feature_fn: Callable, params) -> dict:
    """{'train': ..., 'test': ...}, each {'features': (clips, D), 'label', 'video_id', 'emotion',
    'subject_id'}; computed once per params object (the evaluators of one evaluation share them)."""
    if self._memo[0] is params:
      return self._memo[1]
    out = {}
    for split in SPLITS:
      compute = lambda split=split: features_lib.extract(
          lambda v: feature_fn(params, v), self.views(split, self.num_clips), self.num_clips, self.batch)
      if self.cache_dir:
        out[split] = features_lib.cached(self.cache_dir, {**(self.cache_key or {}), 'split': split}, compute)
      else:
        out[split] = compute()
    self._memo = (params, out)
    return out


class Evaluator:
  """The common part: `run` yields the float entries of `evaluate`'s result (settings aside)."""

  predictions = None
  settings = ()  # float entries of the result that are settings, not measurements

  def evaluate(self, params) -> dict:
    raise NotImplementedError

  def run(self, params) -> Iterator[tuple[str, float]]:
    for k, v in self.evaluate(params).items():
      if isinstance(v, float) and k not in self.settings:
        yield k, v
      elif isinstance(v, dict) and k.startswith('from_'):  # emotion's two readouts
        yield from ((f'{k}/{kk}', vv) for kk, vv in v.items() if isinstance(vv, float))


def build(evals_config, clips: Clips, predict_fns: dict, names=None, **extra) -> dict:
  """{name: Evaluator} for config.evals (name -> dict(type=..., **its settings)), optionally only `names`;
  `extra` goes to every evaluator that takes it (workdir: where recognition writes its confusion matrix)."""
  out = {}
  for name in (names if names is not None else evals_config.keys()):
    if name not in evals_config:
      raise errors.ConfigError(f'config.evals has no evaluator {name!r}; '
                               f'it has {sorted(evals_config.keys())}')
    cfg = dict(evals_config[name])
    kind = cfg.pop('type', name)
    if kind not in TYPES:
      raise errors.ConfigError(f'config.evals.{name}.type: unknown evaluator {kind!r}; known: {TYPES}')
    cls = importlib.import_module(f'mgjax.evals.{kind}').Evaluator
    takes = getattr(cls, 'EXTRA', ())
    out[name] = cls(clips, predict_fns, **cfg, **{k: v for k, v in extra.items() if k in takes})
  return out
