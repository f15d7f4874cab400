"""Pictures of what the model learns: for a few clips, input | masked input | reconstruction."""

from __future__ import annotations

import numpy as np

from mgjax.models import vit
from mgjax.models.videomae import ModelConfig


def _unpatchify(patches, cfg: ModelConfig):
  t, h, w = cfg.grid
  p, kt = cfg.patch, cfg.tubelet
  b = patches.shape[0]
  x = patches.reshape(b, t, h, w, kt, p, p, 3).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, t * kt, h * p, w * p, 3)


def reconstruction_grid(video: np.ndarray, mask: np.ndarray, pred: np.ndarray, cfg: ModelConfig,
                        frames=(0, None)) -> np.ndarray:
  """video uint8 (B,T,H,W,3), mask (B,N) as the model takes it (bool, or int8 with dual masking: 1 the
  decoded tokens, 2 those left out), pred (B,M,P) normalised-pixel predictions of the decoded tokens in
  token order. Returns uint8 rows of [input | masked | reconstruction] for two frames; tokens the decoder
  left out are grey in the reconstruction too."""
  x = video.astype(np.float32) / 255.0
  patches = vit.patchify(x, cfg.patch, cfg.tubelet)
  patches = patches.reshape(patches.shape[:2] + (-1, 3))  # (B, N, kt*p*p, C)
  mean = patches.mean(axis=2, keepdims=True)
  std = patches.std(axis=2, ddof=1, keepdims=True)
  recon = patches.copy()
  masked_view = patches.copy()
  for i in range(len(video)):
    idx = np.flatnonzero(mask[i] == 1)
    pix = pred[i].reshape(len(idx), -1, 3) * (std[i, idx] + 1e-6) + mean[i, idx]
    recon[i, idx] = pix
    recon[i, mask[i] > 1] = 0.5
    masked_view[i, mask[i] > 0] = 0.5
  masked_v, recon_v = _unpatchify(masked_view, cfg), _unpatchify(recon, cfg)
  t = video.shape[1]
  rows = []
  for i in range(len(video)):
    for f in (frames[0], t // 2 if frames[1] is None else frames[1]):
      rows.append(np.concatenate([x[i, f], masked_v[i, f], recon_v[i, f]], axis=1))
  return (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
