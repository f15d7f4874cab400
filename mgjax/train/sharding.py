"""Device mesh and the one table that says how parameters and batches are laid out on it.

Parameters get logical axis names from their path (PARAM_AXES, first match wins); LOGICAL_RULES maps
logical names to mesh axes. A dimension that the mesh axes do not divide stays replicated, so tiny test
models run on any mesh. Mesh axes are Auto: the compiler propagates shardings through the step.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from mgjax import errors

MESH_AXES = ('data', 'fsdp', 'tensor')

# Logical axis -> mesh axes. 'embed' is the model width: FSDP shards parameters along it.
LOGICAL_RULES = (
    ('batch', ('data', 'fsdp')),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('qkv', 'tensor'),
    ('heads', 'tensor'),
    ('vocab', 'tensor'),
)

# Parameter path (joined with '/') -> logical axes of its dimensions.
PARAM_AXES = (
    (r'attn/qkv/kernel$', ('embed', 'qkv')),
    (r'attn/proj/kernel$', ('heads', 'embed')),
    (r'mlp/fc1/kernel$', ('embed', 'mlp')),
    (r'mlp/fc1/bias$', ('mlp',)),
    (r'mlp/fc2/kernel$', ('mlp', 'embed')),
    (r'patch_embed/kernel$', (None, None, None, None, 'embed')),
    (r'encoder_to_decoder/kernel$', ('embed', None)),
    (r'head/kernel$', ('embed', 'vocab')),
)


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one -1 entry takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if shape.count(-1) > 1:
    raise errors.ConfigError(f'config.mesh={tuple(shape)}: at most one -1')
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise errors.ConfigError(f'config.mesh: {tuple(shape)} needs {int(np.prod(shape))} devices, there are '
                             f'{len(devices)}')
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _mesh_axes(logical):
  rules = dict(LOGICAL_RULES)
  return None if logical is None else rules.get(logical)


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return int(np.prod([mesh.shape[a] for a in axes]))


def logical_axes(path: str, ndim: int):
  for pattern, axes in PARAM_AXES:
    if re.search(pattern, path):
      if len(axes) != ndim:
        raise ValueError(f'{path}: rule {pattern} names {len(axes)} axes, parameter has {ndim}')
      return axes
  return (None,) * ndim


def spec_for(mesh: Mesh, path: str, shape) -> P:
  axes = []
  for dim, logical in zip(shape, logical_axes(path, len(shape))):
    m = _mesh_axes(logical)
    axes.append(m if m is not None and dim % _axis_size(mesh, m) == 0 and _axis_size(mesh, m) > 1 else None)
  return P(*axes)


def path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def tree_shardings(mesh: Mesh, tree):
  """NamedSharding for every array leaf of a (possibly abstract) parameter-shaped tree."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: NamedSharding(mesh, spec_for(mesh, path_str(p), x.shape)), tree)


def batch_sharding(mesh: Mesh, ndim: int, leading_unsharded: int = 0) -> NamedSharding:
  """Batch dimension over ('data', 'fsdp'); `leading_unsharded` dims before it (micro-batch index)."""
  return NamedSharding(mesh, P(*([None] * leading_unsharded), _mesh_axes('batch'),
                               *([None] * (ndim - 1 - leading_unsharded))))


def check_batch(mesh: Mesh, global_batch: int, micro_batches: int):
  """Each micro-batch of the global batch splits evenly over the mesh axes the batch is sharded on."""
  ways = _axis_size(mesh, _mesh_axes('batch'))
  if micro_batches < 1 or global_batch % (micro_batches * ways):
    raise errors.ConfigError(
        f'config.global_batch={global_batch} in config.micro_batches={micro_batches} micro-batches does not '
        f'split over the {ways} devices of config.mesh={tuple(mesh.shape.values())} that share a batch '
        f'(data x fsdp): make the global batch a multiple of {max(micro_batches, 1) * ways}')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
