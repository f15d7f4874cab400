"""Temporal segments: the scores of micro-gesture spotting in untrimmed videos, and decoding segments from
per-window class scores. Pure numpy; segments are (start, end) in frames, end exclusive.

Definitions (docs/spotting.md has their sources):
  tiou(a, b)          intersection over union of two segments: (min(ends) - max(starts)) / (max(ends) -
                      min(starts)), 0 when they do not meet (the MiGA starter kit's overlap).
  miga_f1             a detection is correct when its class is a ground-truth segment's and their tIoU
                      exceeds the threshold (0.3 in MiGA); detections and segments are matched one to one,
                      greedily by score (the starter kit lets one detection count for several segments;
                      here each counts once); precision and recall pooled over all videos.
  average_precision   ActivityNet's rule, per class: detections by score, each matched to the unmatched
                      ground-truth segment of its video with the highest tIoU, a true positive when that
                      reaches the threshold; VOC-interpolated AP (precision made monotone, summed over the
                      recall steps).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Segment:
  video: str
  start: float
  end: float
  label: int
  score: float = 1.0


def tiou(a: tuple, b: tuple) -> float:
  """Temporal IoU of two (start, end) segments."""
  inter = min(a[1], b[1]) - max(a[0], b[0])
  if inter <= 0:
    return 0.0
  return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def match(detections: Sequence[Segment], truth: Sequence[Segment], threshold: float,
          strict: bool = True) -> np.ndarray:
  """For each detection (in the order given), the index into `truth` it matches one to one, or -1:
  detections by descending score, each taking the unmatched segment of its video and class with the
  highest tIoU, when that tIoU exceeds (strict) or reaches the threshold."""
  out = np.full(len(detections), -1)
  taken = np.zeros(len(truth), bool)
  index: dict = {}
  for j, t in enumerate(truth):
    index.setdefault((t.video, t.label), []).append(j)
  for i in sorted(range(len(detections)), key=lambda i: -detections[i].score):
    d = detections[i]
    best, best_iou = -1, -1.0
    for j in index.get((d.video, d.label), []):
      if taken[j]:
        continue
      iou = tiou((d.start, d.end), (truth[j].start, truth[j].end))
      if (iou > threshold if strict else iou >= threshold) and iou > best_iou:
        best, best_iou = j, iou
    if best >= 0:
      taken[best] = True
      out[i] = best
  return out


def miga_f1(detections: Sequence[Segment], truth: Sequence[Segment], threshold: float = 0.3) -> dict:
  """{'f1', 'precision', 'recall', 'true_positives', 'detections', 'segments'} pooled over every video."""
  tp = int((match(detections, truth, threshold, strict=True) >= 0).sum())
  precision = tp / len(detections) if detections else 0.0
  recall = tp / len(truth) if truth else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'f1': f1, 'precision': precision, 'recall': recall, 'true_positives': tp,
          'detections': len(detections), 'segments': len(truth)}


def average_precision(detections: Sequence[Segment], truth: Sequence[Segment], threshold: float) -> float:
  """ActivityNet AP of one class's detections against that class's segments (tIoU >= threshold)."""
  if not truth:
    return float('nan')
  if not detections:
    return 0.0
  order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
  matched = match([detections[i] for i in order], truth, threshold, strict=False) >= 0
  tp = np.cumsum(matched)
  precision = tp / np.arange(1, len(order) + 1)
  recall = tp / len(truth)
  # VOC interpolation: the precision envelope, summed over the points where recall grows.
  p = np.concatenate([[0.0], precision, [0.0]])
  r = np.concatenate([[0.0], recall, [1.0]])
  for k in range(len(p) - 2, -1, -1):
    p[k] = max(p[k], p[k + 1])
  steps = np.flatnonzero(r[1:] != r[:-1]) + 1
  return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def mean_ap(detections: Sequence[Segment], truth: Sequence[Segment], thresholds=(0.3, 0.5, 0.7)) -> dict:
  """{'mAP@t': mean over the classes with ground truth, 'per_class@t': {class: AP}} for each threshold."""
  classes = sorted({t.label for t in truth})
  out = {}
  for thr in thresholds:
    per = {c: average_precision([d for d in detections if d.label == c], [t for t in truth if t.label == c],
                                thr) for c in classes}
    out[f'mAP@{thr:g}'] = float(np.mean(list(per.values()))) if per else float('nan')
    out[f'per_class@{thr:g}'] = per
  return out


def decode(video: str, probs: np.ndarray, centres: np.ndarray, hop: float, threshold: float = 0.5,
           nms_tiou: float = 0.5, class_agnostic: bool = True) -> list:
  """Per-window class probabilities -> scored segments of one video.

  probs: (W, C) for windows centred at frames `centres` (ascending, `hop` apart). For each class, every
  run of consecutive windows whose probability reaches `threshold` is one segment, from half a hop before
  its first centre to half a hop after its last, scored by the run's mean probability. Temporal NMS then
  keeps the best-scored segments and drops those overlapping a kept one by more than `nms_tiou` (of any
  class when class_agnostic: a person makes one micro-gesture at a time).
  """
  found = []
  above = np.asarray(probs) >= threshold
  for c in range(above.shape[1]):
    runs = np.flatnonzero(np.diff(np.concatenate([[0], above[:, c].astype(np.int8), [0]])))
    for first, stop in zip(runs[::2], runs[1::2]):  # windows first .. stop - 1
      found.append(Segment(video, float(centres[first] - hop / 2), float(centres[stop - 1] + hop / 2), c,
                           float(np.mean(probs[first:stop, c]))))
  return nms(found, nms_tiou, class_agnostic)


def nms(found: Sequence[Segment], max_tiou: float, class_agnostic: bool = True) -> list:
  """Greedy temporal non-maximum suppression, best score first."""
  kept: list = []
  for s in sorted(found, key=lambda s: -s.score):
    if all(tiou((s.start, s.end), (k.start, k.end)) <= max_tiou for k in kept
           if k.video == s.video and (class_agnostic or k.label == s.label)):
      kept.append(s)
  return kept
