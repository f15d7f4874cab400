"""Classification metrics shared by the evaluators."""

import numpy as np


def classification(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """top-1, top-5, mean class accuracy (over classes present in labels) and per-class accuracy."""
  top5 = np.argsort(-scores, axis=1)[:, :5]
  pred = top5[:, 0]
  per_class = {}
  for c in range(num_classes):
    m = labels == c
    if m.any():
      per_class[c] = float((pred[m] == c).mean())
  return {'top1': float((pred == labels).mean()), 'top5': float((top5 == labels[:, None]).any(1).mean()),
          'mean_class_accuracy': float(np.mean(list(per_class.values()))),
          'per_class_accuracy': {str(c): a for c, a in per_class.items()}}


def confusion(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  m = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(m, (labels, pred), 1)
  return m


def binary(pred: np.ndarray, labels: np.ndarray) -> dict:
  tp = int(((pred == 1) & (labels == 1)).sum())
  fp = int(((pred == 1) & (labels == 0)).sum())
  fn = int(((pred == 0) & (labels == 1)).sum())
  f1 = 2 * tp / max(2 * tp + fp + fn, 1)
  return {'accuracy': float((pred == labels).mean()), 'f1': float(f1), 'count': int(len(labels))}


def l2_normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
