"""ViT building blocks in Flax NNX, laid out as the official VideoMAE code (MCG-NJU) so weights map 1:1.

Parameters are float32; computation runs in `dtype` (bfloat16 by default). Attention has q and v biases
and no k bias; GELU is exact (erf); LayerNorm eps 1e-6; position tables are fixed sinusoids, not params.
Drop path takes an explicit PRNG key (None: off), so the model stays a pure function of (params, inputs).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LN_EPS = 1e-6


@functools.lru_cache(maxsize=None)
def sinusoid_table(n_position: int, dim: int) -> np.ndarray:
  """The official 1-D sinusoid table (n_position, dim): sin on even channels, cos on odd ones."""
  pos = np.arange(n_position, dtype=np.float64)[:, None]
  j = np.arange(dim)
  angle = pos / np.power(10000, 2 * (j // 2) / dim)[None, :]
  table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
  return table.astype(np.float32)


def _dense_init():
  return nnx.initializers.xavier_uniform()


def drop_path(x: jax.Array, rate: float, key: Optional[jax.Array]) -> jax.Array:
  """Stochastic depth: drops the residual branch per sample, rescaling the kept ones."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def resolve_attention(attention: str, dtype, head_dim: int, backend: Optional[str] = None,
                      capability: Optional[str] = None) -> str:
  """The attention implementation a model runs: 'auto' is cuDNN's fused (flash) attention on an NVIDIA GPU of
  compute capability 8.0 or newer when the computation is bfloat16 or float16 and the head width is a
  multiple of 8 up to 128 (what that kernel takes), else XLA's. Measured on one H200 (README, Performance):
  ViT-L pretraining 390 clips/s with cuDNN against 190 with XLA's attention."""
  if attention != 'auto':
    return attention
  backend = backend or jax.default_backend()
  if backend not in ('gpu', 'cuda'):
    return 'xla'
  if capability is None:
    capability = getattr(jax.devices()[0], 'compute_capability', '0.0')
  major = int(str(capability).split('.')[0] or 0)
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return 'cudnn' if major >= 8 and half and head_dim % 8 == 0 and head_dim <= 128 else 'xla'


class Attention(nnx.Module):

  def __init__(self, dim: int, heads: int, *, dtype, attention: str, rngs: nnx.Rngs):
    self.heads, self.dtype, self.attention = heads, dtype, attention
    self.qkv = nnx.Linear(dim, 3 * dim, use_bias=False, kernel_init=_dense_init(), dtype=dtype, rngs=rngs)
    self.q_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.v_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.proj = nnx.Linear(dim, dim, kernel_init=_dense_init(), dtype=dtype, rngs=rngs)

  def __call__(self, x):
    b, n, d = x.shape
    bias = jnp.concatenate([self.q_bias[...], jnp.zeros_like(self.v_bias[...]), self.v_bias[...]])
    qkv = (self.qkv(x) + bias.astype(self.dtype)).reshape(b, n, 3, self.heads, d // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    impl = resolve_attention(self.attention, self.dtype, d // self.heads)
    out = jax.nn.dot_product_attention(q, k, v, implementation=impl)
    return self.proj(out.reshape(b, n, d))


class Mlp(nnx.Module):

  def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(dim, hidden, kernel_init=_dense_init(), dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, dim, kernel_init=_dense_init(), dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):

  def __init__(self, dim: int, heads: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0, dtype,
               attention: str, rngs: nnx.Rngs):
    self.drop_path = drop_path
    self.norm1 = nnx.LayerNorm(dim, epsilon=LN_EPS, dtype=dtype, rngs=rngs)
    self.attn = Attention(dim, heads, dtype=dtype, attention=attention, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, epsilon=LN_EPS, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)

  def __call__(self, x, key: Optional[jax.Array] = None):
    k1, k2 = jax.random.split(key) if key is not None else (None, None)
    x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, k1)
    return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, k2)


def make_blocks(dim, depth, heads, *, drop_path: float, dtype, attention, rngs: nnx.Rngs) -> nnx.List:
  """depth blocks with drop-path rates rising linearly to drop_path (a list: keys read blocks.{i})."""
  rates = np.linspace(0.0, drop_path, depth) if depth > 1 else [drop_path]
  return nnx.List([Block(dim, heads, drop_path=float(r), dtype=dtype, attention=attention, rngs=rngs)
                   for r in rates])


REMAT_POLICIES = {'full': None, 'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def run_blocks(blocks, x, key: Optional[jax.Array] = None, remat: str = 'none'):
  """Applies the blocks in order; remat 'full' or 'dots' recomputes activations in the backward pass."""
  keys = jax.random.split(key, len(blocks)) if key is not None else [None] * len(blocks)
  for block, k in zip(blocks, keys):
    if remat == 'none':
      x = block(x, k)
    else:
      x = nnx.remat(lambda b, y, kk: b(y, kk), policy=REMAT_POLICIES[remat])(block, x, k)
  return x


class PatchEmbed(nnx.Module):
  """Conv3d with kernel = stride = (tubelet, patch, patch), as a matmul over flattened patches.

  The kernel is stored as a Flax Conv kernel [kt, kh, kw, C, D] (PyTorch's [D, C, kt, kh, kw] transposed).
  """

  def __init__(self, dim: int, patch: int, tubelet: int, channels: int = 3, *, dtype, rngs: nnx.Rngs):
    self.patch, self.tubelet, self.dtype = patch, tubelet, dtype
    init = nnx.initializers.xavier_uniform(in_axis=(0, 1, 2, 3), out_axis=4)
    self.kernel = nnx.Param(init(rngs.params(), (tubelet, patch, patch, channels, dim), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))

  def __call__(self, patches):
    """patches: (B, N, kt*p*p*C) from `patchify`."""
    w = self.kernel[...].reshape(-1, self.kernel.shape[-1]).astype(self.dtype)
    return patches.astype(self.dtype) @ w + self.bias[...].astype(self.dtype)


def patchify(video: jax.Array, patch: int, tubelet: int) -> jax.Array:
  """(B, T, H, W, C) -> (B, N, kt*p*p*C), tokens in (t, h, w) order, values in (kt, p, p, C) order."""
  b, t, h, w, c = video.shape
  x = video.reshape(b, t // tubelet, tubelet, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch * c)
