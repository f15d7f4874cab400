"""VideoMAE in plain PyTorch, its modules named as in the official MCG-NJU checkpoints (encoder.blocks.{i}.
attn.qkv, q_bias, v_bias, ..., encoder_to_decoder, mask_token, decoder.head; fine-tuned: blocks.{i}, fc_norm,
head), so exported `official` weights load with load_state_dict(strict=True) and their outputs can be
compared. Input: normalised pixels (B, C, T, H, W), as the official code takes them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def sinusoid_table(n: int, dim: int) -> torch.Tensor:
  pos = np.arange(n, dtype=np.float64)[:, None]
  j = np.arange(dim)
  angle = pos / np.power(10000, 2 * (j // 2) / dim)[None, :]
  return torch.tensor(np.where(j % 2 == 0, np.sin(angle), np.cos(angle)), dtype=torch.float32)[None]


class PatchEmbed(nn.Module):

  def __init__(self, dim, patch, tubelet):
    super().__init__()
    self.proj = nn.Conv3d(3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):

  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim, bias=False)
    self.q_bias = nn.Parameter(torch.zeros(dim))
    self.v_bias = nn.Parameter(torch.zeros(dim))
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
    qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, d // self.heads)
    qkv = qkv.permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)
    return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):

  def __init__(self, dim):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, PyTorch's default


class Block(nn.Module):

  def __init__(self, dim, heads):
    super().__init__()
    self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
    self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):

  def __init__(self, dim, depth, heads, patch, tubelet, num_tokens, final_norm=True):
    super().__init__()
    self.patch_embed = PatchEmbed(dim, patch, tubelet)
    self.register_buffer('pos_embed', sinusoid_table(num_tokens, dim), persistent=False)  # not in the file
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6) if final_norm else nn.Identity()

  def forward(self, x, mask=None):
    x = self.patch_embed(x) + self.pos_embed
    if mask is not None:
      x = x[~mask].reshape(x.shape[0], -1, x.shape[-1])
    for blk in self.blocks:
      x = blk(x)
    return self.norm(x)


class PretrainVideoMAE(nn.Module):
  """Official pretraining layout: encoder.*, encoder_to_decoder, mask_token, decoder.{blocks, norm, head}."""

  def __init__(self, dim, depth, heads, dec_dim, dec_depth, dec_heads, patch, tubelet, num_tokens):
    super().__init__()
    self.encoder = Encoder(dim, depth, heads, patch, tubelet, num_tokens)
    self.encoder_to_decoder = nn.Linear(dim, dec_dim, bias=False)
    self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
    self.register_buffer('pos_embed', sinusoid_table(num_tokens, dec_dim), persistent=False)
    self.decoder = nn.Module()
    self.decoder.blocks = nn.ModuleList([Block(dec_dim, dec_heads) for _ in range(dec_depth)])
    self.decoder.norm = nn.LayerNorm(dec_dim)  # PyTorch's default eps, 1e-5
    self.decoder.head = nn.Linear(dec_dim, tubelet * patch * patch * 3)

  def forward(self, x, mask):
    """mask: bool (B, N), True = masked. Predictions for the masked tokens, in token order."""
    b = x.shape[0]
    y = self.encoder_to_decoder(self.encoder(x, mask))
    pos = self.pos_embed.expand(b, -1, -1)
    vis = y + pos[~mask].reshape(b, -1, y.shape[-1])
    masked = self.mask_token + pos[mask].reshape(b, -1, y.shape[-1])
    z = torch.cat([vis, masked], dim=1)
    for blk in self.decoder.blocks:
      z = blk(z)
    return self.decoder.head(self.decoder.norm(z[:, -masked.shape[1]:]))


class FinetunedVideoMAE(nn.Module):
  """Official fine-tuned layout: patch_embed, blocks (no encoder. prefix), fc_norm, head; mean pooling."""

  def __init__(self, dim, depth, heads, patch, tubelet, num_tokens, num_classes):
    super().__init__()
    enc = Encoder(dim, depth, heads, patch, tubelet, num_tokens, final_norm=False)
    self.patch_embed, self.blocks = enc.patch_embed, enc.blocks
    self.register_buffer('pos_embed', enc.pos_embed, persistent=False)
    self.fc_norm = nn.LayerNorm(dim)  # 1e-5, as mgjax's classifier and transformers'
    self.head = nn.Linear(dim, num_classes)

  def forward(self, x):
    x = self.patch_embed(x) + self.pos_embed
    for blk in self.blocks:
      x = blk(x)
    return self.head(self.fc_norm(x.mean(1)))
