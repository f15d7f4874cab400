"""The FLOP model of a VideoMAE pretraining step and the chips' datasheet peaks (docs/reference.md,
section 4), shared by the step benchmarks of mgjax and of the PyTorch reference."""

from __future__ import annotations

from mgjax.models import videomae

# Dense bf16 datasheet peaks, TFLOP/s per chip (docs/reference.md, section 4).
PEAKS = (('H200', 989.0), ('H100', 989.0), ('v6', 918.0), ('v5p', 459.0), ('v5 lite', 197.0), ('v5e', 197.0),
         ('v4', 275.0))


def layer_flops(n: int, w: int) -> float:
  return 24 * n * w * w + 4 * n * n * w


def flops_per_clip(cfg: videomae.ModelConfig) -> float:
  """One training step's FLOPs per clip: 3 x forward (docs/reference.md, section 4)."""
  size = videomae.SIZES[cfg.size]
  dim, depth = size.dim, size.depth
  ddim, _, ddepth = cfg.decoder
  n, p = cfg.num_tokens, cfg.patch_dim
  v, d = n - cfg.num_masked, cfg.num_decoded  # the decoder reads the visible and the decoded tokens
  fwd = (2 * v * p * dim + depth * layer_flops(v, dim) + 2 * v * dim * ddim + ddepth * layer_flops(v + d, ddim)
         + 2 * d * ddim * p)
  return 3.0 * fwd


def device_peak(device) -> float:
  kind = device.device_kind
  for name, peak in PEAKS:
    if name.lower() in kind.lower():
      return peak
  return 0.0
