"""The fine-tuning model: the VideoMAE encoder over all tokens, mean pooling, fc_norm, a linear head.

As the official fine-tuning code: no final encoder norm when mean pooling (fc_norm takes its place), and
the head initialised small (init_scale 0.001). fc_norm uses eps 1e-5 as transformers'
VideoMAEForVideoClassification does, so exported weights give the same outputs there.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from mgjax.models import videomae
from mgjax.models.videomae import SIZES, ModelConfig


class VideoClassifier(nnx.Module):

  def __init__(self, cfg: ModelConfig, num_classes: int, *, init_scale: float = 0.001, rngs: nnx.Rngs):
    self.cfg = cfg
    dim = SIZES[cfg.size].dim
    dtype = jnp.dtype(cfg.dtype)
    self.encoder = videomae.Encoder(cfg, final_norm=False, rngs=rngs)  # fc_norm comes after pooling
    self.fc_norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, kernel_init=nnx.initializers.truncated_normal(0.02 * init_scale),
                           dtype=dtype, rngs=rngs)

  def features(self, video, key=None):
    """uint8 (B, T, H, W, 3) -> pooled, normalised features (B, D)."""
    patches = videomae.normalized_patches(video, self.cfg)
    return self.fc_norm(self.encoder(patches, key).mean(axis=1))

  def __call__(self, video, key=None):
    return self.head(self.features(video, key)).astype(jnp.float32)
