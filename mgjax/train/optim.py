"""AdamW, learning-rate schedule and the weight-decay mask, as the VideoMAE recipe sets them."""

from __future__ import annotations

import jax
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
