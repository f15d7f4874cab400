"""The train state and the jitted train step, over the model as pure functions of its parameter dict
(models/functional.py): inside jit the step merges the module back from plain pytrees."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mgjax.models import functional
from mgjax.train import sharding


def abstract_state(fns: functional.ModelFns, tx: optax.GradientTransformation):
  def init(seed):
    params = fns.init(seed)
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params)}
  return jax.eval_shape(lambda: init(0)), init


def state_shardings(mesh, abstract):
  return sharding.tree_shardings(mesh, abstract)


def create_state(fns: functional.ModelFns, tx, mesh, seed: int):
  """Initialises the train state directly into its shardings (never whole on one device)."""
  abstract, init = abstract_state(fns, tx)
  shardings = state_shardings(mesh, abstract)
  return jax.jit(init, static_argnums=0, out_shardings=shardings)(seed), shardings


def make_train_step(fns, tx: optax.GradientTransformation, lr_fn: Callable, drop_path: bool,
                    loss: Optional[Callable] = None, batch_fn: Optional[Callable] = None):
  """step(state, batch, key) -> (state, metrics). batch leaves: (micro_batches, batch / micro, ...).

  loss(params, micro_batch, key) defaults to the VideoMAE loss of fns on batch['video'], batch['mask'].
  batch_fn(batch, key) -> batch, if given, transforms the whole global batch (leaves (global, ...))
  before it is cut into micro-batches: fine-tuning's mixup / cutmix, which pairs clips across the batch.

  Gradients are averaged over the micro-batches, then applied once: the same update as the full batch.
  A non-finite loss or gradient leaves the state as it was and reports finite=False.
  """

  if loss is None:
    loss = lambda params, mb, k: fns.loss(params, mb['video'], mb['mask'], k if drop_path else None)

  def step(state, batch, key):
    params = state['params']
    num_micro = jax.tree.leaves(batch)[0].shape[0]
    if batch_fn is not None:
      key, k_batch = jax.random.split(key)
      whole = batch_fn(jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch), k_batch)
      batch = jax.tree.map(lambda x: x.reshape((num_micro, -1) + x.shape[1:]), whole)

    def micro(carry, xs):
      grads_sum, loss_sum = carry
      mb, i = xs
      value, grads = jax.value_and_grad(loss)(params, mb, jax.random.fold_in(key, i))
      return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + value), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads, total), _ = jax.lax.scan(micro, (zeros, jnp.zeros((), jnp.float32)),
                                     (batch, jnp.arange(num_micro)))
    grads = jax.tree.map(lambda g: g / num_micro, grads)
    mean_loss = total / num_micro
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    new = {'step': state['step'] + 1, 'params': optax.apply_updates(params, updates), 'opt_state': opt_state}
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(mean_loss) & jnp.isfinite(grad_norm)
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = {'loss': mean_loss, 'grad_norm': grad_norm, 'lr': lr_fn(state['step']), 'finite': finite}
    return new, metrics

  return step


def jit_train_step(step_fn, mesh, shardings, batch_ndims: dict):
  batch_shardings = {k: sharding.batch_sharding(mesh, n, leading_unsharded=1) for k, n in batch_ndims.items()}
  rep = sharding.replicated(mesh)
  return jax.jit(step_fn, in_shardings=(shardings, batch_shardings, rep),
                 out_shardings=(shardings, rep), donate_argnums=(0,)), batch_shardings


def to_global(batch: dict, micro_batches: int, batch_shardings: dict) -> dict:
  """Host batch -> global arrays (micro_batches, global / micro, ...). The host batch is this process's
  clips as data/stream.py lays them out: micro_batches consecutive parts, the k-th its slice of micro-batch
  k, so micro-batch k holds the same clips for any number of processes."""
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    v = v.reshape((micro_batches, v.shape[0] // micro_batches) + v.shape[1:])
    out[k] = jax.make_array_from_process_local_data(batch_shardings[k], v)
  return out
