"""Micro-gesture recognition by a fine-tuned classifier on the test clips.

As VideoMAE's test: `test_clips` temporal windows spread over the segment x `test_crops` crops along the
long side of the short-side-resized frames (left, centre, right), softmax averaged per clip. One window
and one crop is the quick single-view check that fine-tuning runs every eval_every steps.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from PIL import Image

from mgjax import files
from mgjax.evals import common, metrics


class Evaluator(common.Evaluator):
  EXTRA = ('workdir',)

  def __init__(self, clips: common.Clips, predict_fns: dict, test_clips: int = 3, test_crops: int = 3,
               split: str = 'test', workdir: Optional[str] = None):
    self.clips, self.logits = clips, predict_fns.get('logits')
    self.test_clips, self.test_crops, self.split, self.workdir = test_clips, test_crops, split, workdir

  def evaluate(self, params) -> dict:
    if self.logits is None:
      return {'skipped': 'recognition needs a fine-tuned (classifier) checkpoint'}
    n = self.clips.num_classes
    views = self.test_clips * self.test_crops
    probs, meta = self.clips.per_clip(self.split, self.test_clips, self.test_crops,
                                      lambda v: softmax(np.asarray(self.logits(params, v), np.float64)))
    labels = meta['label']
    self.predictions = (probs.argmax(1), labels, meta['subject_id'])
    out = {'views': views, **metrics.classification(probs, labels, n)}
    if self.workdir and jax.process_index() == 0:
      picture = heatmap(metrics.confusion(probs.argmax(1), labels, n))
      files.write_atomic(files.path(self.workdir) / 'confusion.png', lambda f: picture.save(f, format='PNG'),
                         binary=True)
      out['confusion_png'] = 'confusion.png'
    return out


def softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def heatmap(m: np.ndarray, cell: int = 12) -> Image.Image:
  """A confusion matrix as a picture: rows normalised, darker is more."""
  rows = m / np.maximum(m.sum(1, keepdims=True), 1)
  img = (255 * (1 - rows)).astype(np.uint8)
  img = np.kron(img, np.ones((cell, cell), np.uint8))
  return Image.fromarray(img).convert('RGB')
