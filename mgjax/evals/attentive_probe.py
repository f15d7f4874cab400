"""Attentive probe: the frozen encoder's tokens read by cross-attention, then a linear classifier.

As V-JEPA's and InternVideo2's frozen evaluation: `queries` learned query tokens attend (multi-head,
`heads` heads) over the layer-normed tokens of a clip; their outputs, averaged over the queries and
layer-normed, go through one linear layer to the classes. Trained with softmax cross-entropy and AdamW
(minibatches of `batch` clips, cosine learning rate) on the train clips. With several weight decays,
cross-validation on the train split in folds of whole subjects (as the linear probe) picks the one then
refitted on all of it; every fold and decay trains at once in one vmapped program.

A clip's tokens are those of its `num_clips` windows (config.num_clips) side by side, so the probe
attends over all of them. They are kept in memory (clips x windows x tokens x width, float16): fine for
the sample and small models; for ViT-L at 224 px (1568 tokens of 1024 per window) on the full dataset,
tens of GB.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mgjax.evals import common, linear_probe, metrics


def _layer_norm(x, eps: float = 1e-6):
  m = x.mean(-1, keepdims=True)
  return (x - m) / jnp.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + eps)


def init(key, dim: int, num_classes: int, queries: int, heads: int) -> dict:
  k = jax.random.split(key, 5)
  s = 1 / np.sqrt(dim)
  return {'query': jax.random.normal(k[0], (queries, dim)) * 0.02,
          'wq': jax.random.normal(k[1], (dim, dim)) * s, 'wk': jax.random.normal(k[2], (dim, dim)) * s,
          'wv': jax.random.normal(k[3], (dim, dim)) * s, 'wo': jax.random.normal(k[4], (dim, dim)) * s,
          'head_w': jnp.zeros((dim, num_classes)), 'head_b': jnp.zeros(num_classes)}


def apply(p: dict, tokens: jax.Array, heads: int) -> jax.Array:
  """tokens (B, N, D) -> logits (B, classes)."""
  b, n, d = tokens.shape
  x = _layer_norm(tokens.astype(jnp.float32))
  q = (p['query'] @ p['wq']).reshape(-1, heads, d // heads)  # (Q, H, d)
  k = (x @ p['wk']).reshape(b, n, heads, d // heads)
  v = (x @ p['wv']).reshape(b, n, heads, d // heads)
  att = jax.nn.softmax(jnp.einsum('qhc,bnhc->bhqn', q, k) / np.sqrt(d // heads), axis=-1)
  out = jnp.einsum('bhqn,bnhc->bqhc', att, v).reshape(b, -1, d) @ p['wo']
  return _layer_norm(out.mean(1)) @ p['head_w'] + p['head_b']


def _train(tokens, y, weights, wd, key, num_classes: int, heads: int, queries: int, steps: int, lr: float,
           batch: int):
  """One probe from `key`: tokens (N, T, D), weights (N,) per clip (0 = held out), wd a scalar."""
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, max(steps // 10, 1), steps), weight_decay=wd)
  p = init(key, tokens.shape[-1], num_classes, queries, heads)

  def body(i, carry):
    p, s = carry
    # clips drawn among those of weight 1: the held-out fold never enters a minibatch
    idx = jax.random.choice(jax.random.fold_in(key, i), len(y), (batch,), p=weights / weights.sum())

    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(apply(p, tokens[idx], heads), y[idx]).mean()
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  return jax.lax.fori_loop(0, steps, body, (p, tx.init(p)))[0]


def train_many(tokens, y, weights, wds, num_classes: int, *, heads: int = 4, queries: int = 1, steps: int = 300,
               lr: float = 1e-3, batch: int = 64, seed: int = 0):
  """weights (F, N), wds (L,) -> parameters with leading axes (F, L)."""
  key = jax.random.key(seed)
  fn = lambda w, wd: _train(tokens, y, w, wd, key, num_classes, heads, queries, steps, lr, batch)
  return jax.jit(jax.vmap(jax.vmap(fn, in_axes=(None, 0)), in_axes=(0, None)))(
      jnp.asarray(weights, jnp.float32), jnp.asarray(wds, jnp.float32))


def _logits(p: dict, tokens: np.ndarray, heads: int, chunk: int = 256) -> np.ndarray:
  f = jax.jit(lambda p, t: apply(p, t, heads))
  return np.concatenate([np.asarray(f(p, tokens[i:i + chunk])) for i in range(0, len(tokens), chunk)])


def evaluate(train: dict, test: dict, num_classes: int, *, wd: Sequence[float] = (1e-2,), folds: int = 3,
             heads: int = 4, queries: int = 1, steps: int = 300, lr: float = 1e-3, batch: int = 64,
             seed: int = 0, return_pred: bool = False):
  """train / test: {'tokens' (N, T, D), 'label', 'subject_id'}. Metrics as the linear probe's."""
  wds = [float(v) for v in (wd if isinstance(wd, (list, tuple)) else [wd])]
  x, y = jnp.asarray(train['tokens']), jnp.asarray(train['label'])
  kw = dict(heads=heads, queries=queries, steps=steps, lr=lr, batch=batch, seed=seed)
  out = {'steps': steps, 'queries': queries, 'heads': heads}
  chosen = wds[0]
  if len(wds) > 1:
    groups = train['subject_id']
    if len(np.unique(groups)) < folds:
      groups = np.arange(len(train['label']))
    fold = linear_probe.fold_of(groups, folds, seed)
    p = train_many(x, y, np.stack([(fold != f) for f in range(folds)]), wds, num_classes, **kw)
    correct = np.zeros(len(wds))
    for f in range(folds):
      held = np.flatnonzero(fold == f)
      for j in range(len(wds)):
        pj = jax.tree.map(lambda a, f=f, j=j: a[f, j], p)
        correct[j] += (_logits(pj, train['tokens'][held], heads).argmax(1) == train['label'][held]).sum()
    acc = correct / len(train['label'])
    chosen = max(zip(acc, wds))[1]  # ties: the stronger decay
    out.update(folds=folds, cv_top1={str(w): float(a) for w, a in zip(wds, acc)})
  out['wd'] = chosen
  p = jax.tree.map(lambda a: a[0, 0], train_many(x, y, np.ones((1, len(train['label']))), [chosen],
                                                   num_classes, **kw))
  logits = _logits(p, test['tokens'], heads)
  out.update(metrics.classification(logits, test['label'], num_classes))
  return (out, logits.argmax(1)) if return_pred else out


class Evaluator(common.Evaluator):
  """An attentive probe on the train clips' frozen tokens, tested on the test clips."""

  settings = ('wd',)

  def __init__(self, clips: common.Clips, predict_fns: dict, wd: Sequence[float] = (1e-2,), folds: int = 3,
               heads: int = 4, queries: int = 1, steps: int = 300, lr: float = 1e-3, batch: int = 64,
               seed: int = 0):
    self.clips, self.tokens_fn = clips, predict_fns.get('tokens')
    self.kw = dict(wd=wd, folds=folds, heads=heads, queries=queries, steps=steps, lr=lr, batch=batch, seed=seed)
    self._tokens: Optional[tuple] = None

  def evaluate(self, params) -> dict:
    if self.tokens_fn is None:
      return {'skipped': 'attentive_probe needs the encoder\'s tokens (predict_fns["tokens"])'}
    data = {}
    for split in common.SPLITS:
      t, meta = self.clips.per_clip(split, self.clips.num_clips, 1,
                                    lambda v: np.asarray(self.tokens_fn(params, v), np.float16), reduce='concat')
      data[split] = {'tokens': t, **meta}
    out, pred = evaluate(data['train'], data['test'], self.clips.num_classes, **self.kw, return_pred=True)
    self.predictions = (pred, data['test']['label'], data['test']['subject_id'])
    return out
