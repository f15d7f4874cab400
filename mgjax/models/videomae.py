"""VideoMAE pretraining model (Tong et al. 2022): ViT encoder over visible tokens + light decoder.

Shapes follow docs/reference.md, section 2. Module and parameter names follow the official checkpoint
(encoder.patch_embed, encoder.blocks.{i}.attn.qkv, ..., encoder_to_decoder, mask_token, decoder.head).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgjax import errors
from mgjax.models import vit

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

class Size(NamedTuple):
  dim: int
  depth: int
  heads: int
  decoder_dim: int
  decoder_heads: int
  decoder_depth: int  # the official scripts' (L and H: 12)


SIZES = {
    'T': Size(64, 2, 2, 32, 2, 1),  # tests
    'XS': Size(128, 4, 4, 64, 2, 2),  # the CPU demo
    'S': Size(384, 12, 6, 192, 3, 4),
    'B': Size(768, 12, 12, 384, 6, 4),
    'L': Size(1024, 24, 16, 512, 8, 12),
    'H': Size(1280, 32, 16, 640, 8, 12),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  size: str = 'B'
  frames: int = 16
  image_size: int = 224
  patch: int = 16
  tubelet: int = 2
  decoder_depth: Optional[int] = None  # None: the official depth for the size
  decoder_width: Optional[int] = None  # None: the official width; heads keep the size's decoder head width
  drop_path: float = 0.0
  dtype: str = 'bfloat16'
  attention: str = 'auto'  # 'auto' (cuDNN on a recent NVIDIA GPU in bf16/fp16, else XLA), 'xla', 'cudnn'
  remat: str = 'none'  # 'none', 'full', 'dots'
  mask_ratio: float = 0.9  # int(ratio * h * w) masked positions per frame slot
  mask_type: str = 'tube'  # 'tube': the same positions in every slot (VideoMAE); 'random': any tokens, same count
  # Dual masking (VideoMAE V2): the fraction of the masked tokens the decoder leaves out (0: decodes them all)
  decoder_mask_ratio: float = 0.0

  def __post_init__(self):
    if self.size not in SIZES:
      raise errors.ConfigError(f'config.model.size: unknown {self.size!r}; known: {tuple(SIZES)}')
    s = SIZES[self.size]
    dim, heads = s.decoder_dim, s.decoder_heads
    if self.decoder_width is not None and (self.decoder_width <= 0 or self.decoder_width % (dim // heads)):
      raise errors.ConfigError(f'config.model.decoder_width={self.decoder_width}: not a positive multiple of size '
                       f'{self.size}\'s decoder head width {dim // heads}')
    if not 0 <= self.decoder_mask_ratio < 1 or (self.decoder_mask_ratio and self.num_decoded < 1):
      raise errors.ConfigError(f'config.model.decoder_mask_ratio={self.decoder_mask_ratio}: the fraction of the '
                               f'masked tokens the decoder leaves out must be in [0, 1) and leave at least one')

  @property
  def decoder(self) -> tuple[int, int, int]:
    """The decoder's (width, heads, depth): the size's own unless decoder_width / decoder_depth are set."""
    s = SIZES[self.size]
    dim, heads, depth = s.decoder_dim, s.decoder_heads, s.decoder_depth
    width = self.decoder_width if self.decoder_width is not None else dim
    return (width, width // (dim // heads), self.decoder_depth if self.decoder_depth is not None else depth)

  @property
  def grid(self) -> tuple[int, int, int]:
    return self.frames // self.tubelet, self.image_size // self.patch, self.image_size // self.patch

  @property
  def num_tokens(self) -> int:
    t, h, w = self.grid
    return t * h * w

  @property
  def num_masked(self) -> int:
    t, h, w = self.grid
    return int(self.mask_ratio * h * w) * t

  @property
  def num_decoded(self) -> int:
    """The masked tokens the decoder reconstructs (and the loss covers): all of them, or with dual
    masking int((1 - decoder_mask_ratio) * masked per time slot) per time slot."""
    if not self.decoder_mask_ratio:
      return self.num_masked
    t = self.grid[0]
    return int((1 - self.decoder_mask_ratio) * (self.num_masked // t)) * t

  @property
  def patch_dim(self) -> int:
    return self.tubelet * self.patch * self.patch * 3


class Encoder(nnx.Module):
  """Patch embedding + fixed position table + blocks (+ the final norm; a classifier has fc_norm instead)."""

  def __init__(self, cfg: ModelConfig, *, final_norm: bool = True, rngs: nnx.Rngs):
    s = SIZES[cfg.size]
    dim, depth, heads = s.dim, s.depth, s.heads
    dtype = jnp.dtype(cfg.dtype)
    self.patch_embed = vit.PatchEmbed(dim, cfg.patch, cfg.tubelet, dtype=dtype, rngs=rngs)
    self.blocks = vit.make_blocks(dim, depth, heads, drop_path=cfg.drop_path, dtype=dtype,
                                  attention=cfg.attention, rngs=rngs)
    if final_norm:
      self.norm = nnx.LayerNorm(dim, epsilon=vit.LN_EPS, dtype=dtype, rngs=rngs)
    self.final_norm = final_norm
    self.num_tokens, self.dim, self.remat = cfg.num_tokens, dim, cfg.remat

  def embed(self, patches, positions: Optional[jax.Array] = None):
    """Patch embedding plus the fixed position table (not a Param): patches (B, N, P) of every token, or
    (B, V, P) of chosen tokens with `positions` (B, V) their token indices."""
    x = self.patch_embed(patches)
    table = jnp.asarray(vit.sinusoid_table(self.num_tokens, self.dim), x.dtype)
    return x + (table if positions is None else table[positions])

  def __call__(self, patches, key=None, positions: Optional[jax.Array] = None):
    """patches (B, N, P) of every token; or, as pretraining does (only the visible tokens embedded),
    (B, V, P) of chosen tokens and `positions` (B, V) their token indices."""
    x = vit.run_blocks(self.blocks, self.embed(patches, positions), key, self.remat)
    return self.norm(x) if self.final_norm else x

  def tokens_after(self, patches, block: int):
    """The tokens (B, N, D) that block `block` (0-based; negative counts from the last) puts out, for
    all tokens; the last block's go through the final norm as __call__'s do."""
    depth = len(self.blocks)
    b = block + depth if block < 0 else block
    if not 0 <= b < depth:
      raise ValueError(f'block {block} of an encoder of {depth} blocks')
    if b == depth - 1:
      return self(patches)
    return vit.run_blocks(self.blocks[:b + 1], self.embed(patches))


class Decoder(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dim, heads, depth = cfg.decoder
    dtype = jnp.dtype(cfg.dtype)
    self.blocks = vit.make_blocks(dim, depth, heads, drop_path=0.0, dtype=dtype, attention=cfg.attention,
                                  rngs=rngs)
    self.remat = cfg.remat
    self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)  # PyTorch default, as official
    self.head = nnx.Linear(dim, cfg.patch_dim, kernel_init=nnx.initializers.xavier_uniform(), dtype=dtype,
                           rngs=rngs)

  def __call__(self, x, num_masked: int):
    x = vit.run_blocks(self.blocks, x, remat=self.remat)
    return self.head(self.norm(x[:, -num_masked:]))


class VideoMAE(nnx.Module):
  """(video uint8 (B,T,H,W,3), mask (B,N)) -> (prediction, target) of the tokens the decoder reconstructs.

  mask: bool, True = masked (cfg.num_masked per clip, `pretrain.make_mask`), every masked token decoded;
  or, with dual masking, int8 (`pretrain.dual_mask`): 0 = seen by the encoder, 1 = masked and decoded
  (cfg.num_decoded per clip), 2 = masked and left out of the decoder (and of the loss).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dec_dim = cfg.decoder[0]
    self.encoder = Encoder(cfg, rngs=rngs)
    self.encoder_to_decoder = nnx.Linear(SIZES[cfg.size].dim, dec_dim, use_bias=False,
                                         kernel_init=nnx.initializers.xavier_uniform(),
                                         dtype=jnp.dtype(cfg.dtype), rngs=rngs)
    self.mask_token = nnx.Param(jax.random.truncated_normal(rngs.params(), -2, 2, (1, 1, dec_dim)) * 0.02)
    self.decoder = Decoder(cfg, rngs=rngs)

  def __call__(self, video, mask, key=None):
    cfg = self.cfg
    num_visible, num_decoded = cfg.num_tokens - cfg.num_masked, cfg.num_decoded
    # Visible tokens first, then the decoded masked ones, then those left out, each in token order (a
    # stable sort of the mask).
    order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)
    visible, decoded = order[:, :num_visible], order[:, num_visible:num_visible + num_decoded]
    # The uint8 pixels of each token, gathered before anything is computed on them: the encoder embeds
    # only the visible tokens and the target covers only the decoded ones.
    raw = vit.patchify(video, cfg.patch, cfg.tubelet)
    take = lambda idx: jnp.take_along_axis(raw, idx[..., None], axis=1)
    enc = self.encoder(normalize_patch_pixels(take(visible)), key=key, positions=visible)
    dtype = enc.dtype
    y = self.encoder_to_decoder(enc)
    pos = jnp.asarray(vit.sinusoid_table(cfg.num_tokens, y.shape[-1]), dtype)
    y_vis = y + pos[visible]
    y_mask = jnp.broadcast_to(self.mask_token[...].astype(dtype), (y.shape[0], num_decoded, y.shape[-1]))
    y_mask = y_mask + pos[decoded]
    pred = self.decoder(jnp.concatenate([y_vis, y_mask], axis=1), num_decoded)
    target = patch_target(take(decoded).astype(jnp.float32) / 255.0)
    return pred.astype(jnp.float32), target


def normalized_pixel_target(x01, patch: int, tubelet: int):
  """Per token and per channel: pixels in [0, 1] minus their mean, over (unbiased std + 1e-6).

  x01: (B, T, H, W, C) in [0, 1]. Returns (B, N, kt*p*p*C) flattened channel-last, as the official code.
  """
  return patch_target(vit.patchify(x01, patch, tubelet), x01.shape[-1])


def patch_target(t, channels: int = 3):
  """normalized_pixel_target of patches already cut: (B, n, kt*p*p*C) in [0, 1] -> the same shape."""
  b, n, _ = t.shape
  t = t.reshape(b, n, -1, channels)
  mean = t.mean(axis=2, keepdims=True)
  std = jnp.sqrt(t.var(axis=2, keepdims=True, ddof=1))
  return ((t - mean) / (std + 1e-6)).reshape(b, n, -1)


def loss_fn(pred, target):
  """MSE over the decoded masked tokens (pred and target hold only those)."""
  return jnp.mean((pred - target) ** 2)


def normalized_patches(video, cfg: ModelConfig):
  """uint8 (B, T, H, W, 3) -> ImageNet-normalised patches (B, N, kt*p*p*3): what the encoders read."""
  return normalize_patch_pixels(vit.patchify(video, cfg.patch, cfg.tubelet))


def normalize_patch_pixels(raw):
  """uint8 patches (..., kt*p*p*3), channel last -> float32 ImageNet-normalised."""
  x = raw.astype(jnp.float32).reshape(*raw.shape[:-1], -1, 3) / 255.0
  return ((x - IMAGENET_MEAN) / IMAGENET_STD).reshape(raw.shape)


def count_params(tree) -> int:
  """Parameters of a module, or of a parameter dict."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
