"""Linear probe: a softmax classifier trained on standardised train-split features (full batch, AdamW)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mgjax.evals import metrics


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, steps: int = 500, lr: float = 1e-2,
        weight_decay: float = 1e-4, seed: int = 0):
  mean, std = x.mean(0), x.std(0) + 1e-6
  xs = jnp.asarray((x - mean) / std)
  w = {'w': jax.random.normal(jax.random.key(seed), (x.shape[1], num_classes)) * 0.01,
       'b': jnp.zeros(num_classes)}
  tx = optax.adamw(lr, weight_decay=weight_decay)

  def loss(p):
    return optax.softmax_cross_entropy_with_integer_labels(xs @ p['w'] + p['b'], jnp.asarray(y)).mean()

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = tx.init(w)
  for _ in range(steps):
    w, state = step(w, state)
  return lambda z: np.asarray(((z - mean) / std) @ np.asarray(w['w']) + np.asarray(w['b']))


def evaluate(train: dict, test: dict, num_classes: int, steps: int = 500, lr: float = 1e-2) -> dict:
  predict = fit(train['features'], train['label'], num_classes, steps, lr)
  return {'steps': steps, **metrics.classification(predict(test['features']), test['label'], num_classes)}
