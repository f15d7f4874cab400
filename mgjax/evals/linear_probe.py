"""Linear probe: softmax regression on standardised train-split features (full batch, Adam, an L2 penalty
on the weights). Given several L2 strengths, the probe picks one by cross-validation on the train split,
in folds of whole subjects as the cross-subject test holds out whole subjects, then refits on all of it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mgjax.evals import common, metrics


def _train(xs, y, weights, l2, num_classes: int, steps: int, lr: float):
  """One softmax regression from zero: xs (N, D) standardised, weights (N,) per sample, l2 a scalar."""
  tx = optax.adam(lr)

  def loss(p):
    ce = optax.softmax_cross_entropy_with_integer_labels(xs @ p['w'] + p['b'], y)
    return (weights * ce).sum() / weights.sum() + l2 * (p['w'] ** 2).sum()

  def body(_, carry):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  p = {'w': jnp.zeros((xs.shape[1], num_classes)), 'b': jnp.zeros(num_classes)}
  return jax.lax.fori_loop(0, steps, body, (p, tx.init(p)))[0]


def _train_many(xs, y, weights, l2s, num_classes: int, steps: int, lr: float):
  """weights (F, N), l2s (L,) -> parameters with leading axes (F, L): every fold with every L2, one program."""
  fn = lambda w, l2: _train(xs, y, w, l2, num_classes, steps, lr)
  fn = jax.vmap(jax.vmap(fn, in_axes=(None, 0)), in_axes=(0, None))
  return jax.jit(fn)(weights, l2s)


def _standardise(x: np.ndarray):
  mean, std = x.mean(0), x.std(0) + 1e-6
  return lambda z: ((z - mean) / std).astype(np.float32)


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, steps: int = 500, lr: float = 1e-2,
        l2: float = 1e-4):
  """Trains on all of (x, y); returns features -> logits."""
  norm = _standardise(x)
  p = _train_many(jnp.asarray(norm(x)), jnp.asarray(y), jnp.ones((1, len(x))), jnp.asarray([l2], jnp.float32),
                  num_classes, steps, lr)
  w, b = np.asarray(p['w'][0, 0]), np.asarray(p['b'][0, 0])
  return lambda z: norm(z) @ w + b


def fold_of(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
  """Fold index per sample: whole groups (subjects) dealt to folds in a seeded order."""
  uniq = np.unique(groups)
  order = np.random.default_rng(seed).permutation(len(uniq))
  fold = {uniq[g]: i % folds for i, g in enumerate(order)}
  return np.array([fold[g] for g in groups])


def select_l2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, num_classes: int, l2s: Sequence[float],
              folds: int = 3, steps: int = 500, lr: float = 1e-2, seed: int = 0) -> tuple[float, dict]:
  """(best L2, {L2: cross-validated top-1}). Ties go to the stronger penalty."""
  fold = fold_of(groups, folds, seed)
  norm = _standardise(x)
  xs = norm(x)
  weights = np.stack([(fold != f).astype(np.float32) for f in range(folds)])
  p = _train_many(jnp.asarray(xs), jnp.asarray(y), jnp.asarray(weights), jnp.asarray(l2s, jnp.float32),
                  num_classes, steps, lr)
  w, b = np.asarray(p['w']), np.asarray(p['b'])  # (F, L, D, C), (F, L, C)
  correct = np.zeros(len(l2s))
  for f in range(folds):
    held = fold == f
    logits = np.einsum('nd,ldc->lnc', xs[held], w[f]) + b[f][:, None]
    correct += (logits.argmax(-1) == y[held]).sum(1)
  acc = correct / len(y)
  best = max(range(len(l2s)), key=lambda i: (acc[i], l2s[i]))
  return float(l2s[best]), {str(l2): float(a) for l2, a in zip(l2s, acc)}


def evaluate(train: dict, test: dict, num_classes: int, steps: int = 500, lr: float = 1e-2,
             l2: Sequence[float] = (1e-4,), folds: int = 3, seed: int = 0,
             groups: Optional[np.ndarray] = None, return_pred: bool = False):
  """Top-1 etc. on the test split. With several `l2` values, cross-validation on the train split (folds of
  train['subject_id'], or of `groups`) picks the one refitted on the whole train split. With return_pred,
  (metrics, top-1 class per test sample)."""
  l2s = [float(v) for v in (l2 if isinstance(l2, (list, tuple)) else [l2])]
  out = {'steps': steps}
  if len(l2s) > 1:
    g = groups if groups is not None else train.get('subject_id', np.arange(len(train['label'])))
    if len(np.unique(g)) < folds:  # too few subjects to hold out whole ones: folds of clips
      g = np.arange(len(train['label']))
    chosen, cv = select_l2(train['features'], train['label'], g, num_classes, l2s, folds, steps, lr, seed)
    out.update(l2=chosen, cv_top1=cv, folds=folds)
  else:
    chosen = l2s[0]
    out['l2'] = chosen
  logits = fit(train['features'], train['label'], num_classes, steps, lr, chosen)(test['features'])
  out.update(metrics.classification(logits, test['label'], num_classes))
  return (out, logits.argmax(1)) if return_pred else out


class Evaluator(common.Evaluator):
  """A linear classifier on the train clips' frozen features, tested on the test clips."""

  settings = ('l2',)

  def __init__(self, clips: common.Clips, predict_fns: dict, steps: int = 500, lr: float = 1e-2,
               l2: Sequence[float] = (1e-4,), folds: int = 3, seed: int = 0):
    self.clips, self.predict = clips, predict_fns['features']
    self.kw = dict(steps=steps, lr=lr, l2=l2, folds=folds, seed=seed)

  def evaluate(self, params) -> dict:
    f = self.clips.features(self.predict, params)
    out, pred = evaluate(f['train'], f['test'], self.clips.num_classes, **self.kw, return_pred=True)
    self.predictions = (pred, f['test']['label'], f['test']['subject_id'])
    return out
