"""AdamW, learning-rate schedule, the weight-decay mask and layer-wise lr decay, as the VideoMAE recipe sets
them."""

from __future__ import annotations

import jax
import ml_collections
import optax

from mgjax.train import sharding


def scaled_lr(base_lr: float, global_batch: int) -> float:
  """The recipe's linear scaling rule: lr = base_lr * global_batch / 256."""
  return base_lr * global_batch / 256


def schedule(*, base_lr: float, min_lr: float, global_batch: int, warmup_steps: int, total_steps: int):
  """Linear warmup from 0 to the scaled lr, then cosine to the scaled min lr at total_steps."""
  peak, end = scaled_lr(base_lr, global_batch), scaled_lr(min_lr, global_batch)
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup_steps, 0), max(total_steps, 1), end)


NO_DECAY_NAMES = ('mask_token', 'pos_embed', 'cls_token')


def decay_mask(params):
  """Weight decay on matrices only: not on biases, norms (1-D) or tokens and tables."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x.ndim >= 2 and not any(n in sharding.path_str(p) for n in NO_DECAY_NAMES), params)


def make_optimizer(lr_schedule, *, b1: float, b2: float, weight_decay: float, clip_norm: float = 0.0):
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
  parts.append(optax.adamw(lr_schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask))
  return optax.chain(*parts)


def layer_scales(params: dict, depth: int, decay: float) -> dict:
  """Layer-wise lr decay: patch embedding is layer 0, block i layer i + 1, everything after the blocks
  (fc_norm, head) depth + 1; a layer's lr is scaled by decay ** (depth + 1 - layer)."""
  def scale(path, _):
    p = sharding.path_str(path)
    if 'patch_embed' in p:
      layer = 0
    elif p.startswith('encoder/blocks/'):
      layer = int(p.split('/')[2]) + 1
    else:
      layer = depth + 1
    return decay ** (depth + 1 - layer)
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_updates(scales) -> optax.GradientTransformation:
  return optax.GradientTransformation(
      lambda p: optax.EmptyState(),
      lambda u, s, p=None: (jax.tree.map(lambda x, c: x * c, u, scales), s))


def schedule_from_config(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """(lr schedule, total steps, warmup steps) of config.optim, config.epochs / total_steps."""
  o = config.optim
  total_steps = config.total_steps or int(config.epochs * steps_per_epoch)
  warmup = o.warmup_steps if o.warmup_steps >= 0 else int(o.warmup_epochs * steps_per_epoch)
  lr_fn = schedule(base_lr=o.base_lr, min_lr=o.min_lr, global_batch=config.global_batch,
                   warmup_steps=warmup, total_steps=total_steps)
  return lr_fn, total_steps, warmup


def from_config(o: ml_collections.ConfigDict, lr_fn, abstract_params: dict, depth: int):
  """The optimizer of config.optim; with o.layer_decay (fine-tuning), layer-wise lr decay after it."""
  tx = make_optimizer(lr_fn, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, clip_norm=o.clip_norm)
  if 'layer_decay' in o:
    tx = optax.chain(tx, scale_updates(layer_scales(abstract_params, depth, o.layer_decay)))
  return tx
