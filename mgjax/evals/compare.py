"""Paired comparison of two evaluations' per-clip predictions: the difference in top-1 and a bootstrap
interval over test subjects (the binary: mgjax/compare.py)."""

from __future__ import annotations

import numpy as np

from mgjax import files

TASKS = ('knn', 'linear_probe', 'attentive_probe', 'recognition')


def load(workdir: str) -> dict:
  path = files.path(workdir) / 'predictions.npz'
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: run mgjax.evaluate with --workdir={workdir} first')
  with path.open('rb') as f, np.load(f) as z:
    return {k: z[k] for k in z.files}


def compare(a: dict, b: dict, resamples: int = 2000, confidence: float = 0.9, seed: int = 0,
            names=('A', 'B')) -> dict:
  """{task: {top1_a, top1_b, difference, low, high}} in points, for the tasks both hold."""
  out = {}
  for task in TASKS:
    if f'{task}.pred' not in a or f'{task}.pred' not in b:
      continue
    for k in ('label', 'subject_id'):
      if not np.array_equal(a[f'{task}.{k}'], b[f'{task}.{k}']):
        raise ValueError(f'{task}: {names[0]} and {names[1]} were not evaluated on the same test clips '
                         f'({k} differs)')
    ok_a = (a[f'{task}.pred'] == a[f'{task}.label']).astype(np.float64)
    ok_b = (b[f'{task}.pred'] == b[f'{task}.label']).astype(np.float64)
    subjects = a[f'{task}.subject_id']
    uniq, inverse = np.unique(subjects, return_inverse=True)
    # Per subject: clips and correct-clip counts, so a resample is a weighted sum over subjects.
    n = np.bincount(inverse, minlength=len(uniq))
    diff = np.bincount(inverse, ok_a - ok_b, minlength=len(uniq))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=resamples)
    boot = 100 * (counts @ diff) / (counts @ n)
    alpha = (1 - confidence) / 2
    out[task] = {'top1_a': 100 * ok_a.mean(), 'top1_b': 100 * ok_b.mean(),
                 'difference': 100 * (ok_a.mean() - ok_b.mean()),
                 'low': float(np.quantile(boot, alpha)), 'high': float(np.quantile(boot, 1 - alpha)),
                 'clips': int(len(subjects)), 'subjects': int(len(uniq))}
  return out
