"""Micro-gesture spotting in whole videos: where every micro-gesture starts and ends, and which it is.

Dense frozen features (mgjax/evals/dense.py: a window every `hop` frames) of the labelled videos of the
`pretrain` records feed a small temporal head: `layers` 1-D convolutions (kernel `kernel`, `width`
channels, GELU) over a video's sequence of window features, then a linear layer to 33 scores per window
(no gesture + the 32 classes). It learns, with softmax cross-entropy against the class of each window's
centre frame, from the training subjects' videos (random crops of `crop` windows, AdamW). On the test
subjects' videos every window takes its most likely class; each run of windows of one gesture class is a
detection from half a hop before its first centre to half a hop after its last, scored by the run's mean
probability of that class (runs shorter than `min_frames` dropped).

Scores (mgjax/evals/segments.py, defined in docs/spotting.md): the MiGA F1 at tIoU 0.3 (the challenge's)
and 0.5, with an interval from a bootstrap over test subjects; mAP at tIoU 0.3 / 0.5 / 0.7 by the
ActivityNet rule; and, on the same videos, the majority-class sliding-window detector: segments of the
median training-segment length laid end to end over every test video, all of the most frequent
training class (`baseline_...`). With a workdir it also writes spotting/predictions.json (every detection),
spotting/miga/VIDEO_label.csv (rows classID,startFrame,endFrame with classID 1..32 = C1..C32, a MiGA
submission) and spotting/timeline.png (a few test videos: truth above, detections below).
"""

from __future__ import annotations

import colorsys
import csv
import io
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, ImageDraw

from mgjax import errors
from mgjax import files
from mgjax.data import records
from mgjax.evals import common, dense
from mgjax.evals import features as features_lib
from mgjax.evals import segments as seg_lib

THRESHOLDS = (0.3, 0.5)  # F1: MiGA's 0.3, and 0.5
MAP_THRESHOLDS = (0.3, 0.5, 0.7)


# ---- The data: labelled videos of the train and test subjects -------------------------------------------

def split_videos(data_dir: str, protocol: dict, pretrain: str = 'pretrain'):
  """(source, {'train': [Video], 'test': [Video]}): the labelled videos of the protocol's train and test
  subjects in data_dir's pretrain records (split `all`)."""
  if not data_dir:
    raise errors.ConfigError('spotting reads the pretrain records beside the clips: no data_dir given')
  source = records.data_source(data_dir, pretrain, 'all')
  records.require_frame_labels(source, data_dir, 'spotting')
  rec = protocol.get('mg_recognition', {})
  subjects = {'train': set(rec.get('train_subject_ids', [])), 'test': set(rec.get('test_subject_ids', []))}
  vids = [v for v in dense.videos(source) if v.labelled]
  out = {s: [v for v in vids if v.subject_id in subjects[s]] for s in subjects}
  empty = [s for s, v in out.items() if not v]
  if empty:
    raise errors.DataError(f'{data_dir}: no labelled videos of the protocol\'s {" or ".join(empty)} subjects '
                           f'in the {pretrain} records')
  return source, out


def truth_of(video: dense.Video, segments: np.ndarray) -> list:
  """Ground-truth segments of a video, end exclusive as segments.py counts."""
  return [seg_lib.Segment(video.video_id, float(a), float(b) + 1, int(c)) for a, b, c in segments.tolist()]


# ---- The temporal head ----------------------------------------------------------------------------------

def _init(key, dim: int, classes: int, layers: int, width: int, kernel: int) -> dict:
  params, fan_in = {}, dim
  for i, k in enumerate(jax.random.split(key, layers + 1)):
    out = classes if i == layers else width
    shape = (fan_in, out) if i == layers else (kernel, fan_in, out)
    params[f'w{i}'] = jax.random.normal(k, shape) / np.sqrt(np.prod(shape[:-1]))
    params[f'b{i}'] = jnp.zeros(out)
    fan_in = out
  return params


def head_apply(params: dict, x: jax.Array, layers: int) -> jax.Array:
  """x (B, W, D) standardised window features -> (B, W, classes) logits."""
  for i in range(layers):
    x = jax.lax.conv_general_dilated(x, params[f'w{i}'], (1,), 'SAME', dimension_numbers=('NWC', 'WIO', 'NWC'))
    x = jax.nn.gelu(x + params[f'b{i}'])
  return x @ params[f'w{layers}'] + params[f'b{layers}']


def train_head(xs: list, ys: list, classes: int, *, layers: int = 2, width: int = 128, kernel: int = 5,
               steps: int = 400, lr: float = 1e-3, weight_decay: float = 1e-2, crop: int = 64, batch: int = 16,
               seed: int = 0):
  """Trains the head on per-video features xs [(W, D)] and window classes ys [(W,)] (0 = none, 1..32);
  returns f((W, D) features) -> (W, classes) probabilities."""
  mean = np.concatenate(xs).mean(0)
  std = np.concatenate(xs).std(0) + 1e-6
  xs = [((x - mean) / std).astype(np.float32) for x in xs]
  rng = np.random.default_rng(seed)
  params = _init(jax.random.key(seed), xs[0].shape[1], classes, layers, width, kernel)
  tx = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=weight_decay)
  state = tx.init(params)

  @jax.jit
  def step(params, state, x, y, m):
    def loss(p):
      ce = optax.softmax_cross_entropy_with_integer_labels(head_apply(p, x, layers), y)
      return (ce * m).sum() / m.sum()
    g = jax.grad(loss)(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  lengths = np.array([len(x) for x in xs])
  for _ in range(steps):
    x = np.zeros((batch, crop, xs[0].shape[1]), np.float32)
    y = np.zeros((batch, crop), np.int32)
    m = np.zeros((batch, crop), np.float32)
    for b, v in enumerate(rng.choice(len(xs), batch, p=lengths / lengths.sum())):
      a = int(rng.integers(0, max(lengths[v] - crop, 0) + 1))
      n = min(crop, lengths[v] - a)
      x[b, :n], y[b, :n], m[b, :n] = xs[v][a:a + n], ys[v][a:a + n], 1
    params, state = step(params, state, x, y, m)

  apply = jax.jit(lambda p, x: jax.nn.softmax(head_apply(p, x, layers)))

  def predict(x: np.ndarray) -> np.ndarray:
    n = len(x)
    padded = np.zeros((max(crop, -(-n // crop) * crop), x.shape[1]), np.float32)  # few distinct shapes
    padded[:n] = (x - mean) / std
    return np.asarray(apply(params, padded[None]))[0, :n]
  return predict


# ---- Detections -----------------------------------------------------------------------------------------

def detect(video: str, probs: np.ndarray, centres: np.ndarray, hop: float, min_frames: float = 0) -> list:
  """Runs of windows whose most likely class is one gesture (column 0 is no gesture) -> Segments."""
  top = probs.argmax(1)
  onehot = probs[:, 1:] * (top[:, None] - 1 == np.arange(probs.shape[1] - 1))
  found = seg_lib.decode(video, onehot, centres, hop, threshold=1e-12, nms_tiou=1.0)
  return sorted((s for s in found if s.end - s.start > min_frames), key=lambda s: (s.start, -s.score))


def majority_baseline(train_truth: list, videos: list) -> tuple[list, dict]:
  """The majority-class sliding-window detector: segments of the median training-segment length, end to
  end over each video, all of the most frequent training class."""
  counts = np.bincount([t.label for t in train_truth])
  label = int(counts.argmax())
  length = float(np.median([t.end - t.start for t in train_truth]))
  dets = [seg_lib.Segment(v.video_id, float(a), float(min(a + length, v.num_frames)), label, 1.0)
          for v in videos for a in np.arange(0, v.num_frames, length)]
  return dets, {'class': label, 'length': length}


def f1_with_interval(dets: list, truth: list, subject_of: dict, threshold: float, resamples: int = 2000,
                     confidence: float = 0.9, seed: int = 0) -> dict:
  """MiGA F1 pooled over the videos, and a bootstrap interval over test subjects (whole subjects resampled
  with replacement; detections and segments counted per subject, so a resample sums them)."""
  out = seg_lib.miga_f1(dets, truth, threshold)
  matched = seg_lib.match(dets, truth, threshold) >= 0
  subjects = sorted(set(subject_of.values()))
  where = {s: i for i, s in enumerate(subjects)}
  tp, nd, nt = (np.zeros(len(subjects)) for _ in range(3))
  for d, ok in zip(dets, matched):
    nd[where[subject_of[d.video]]] += 1
    tp[where[subject_of[d.video]]] += ok
  for t in truth:
    nt[where[subject_of[t.video]]] += 1
  counts = np.random.default_rng(seed).multinomial(len(subjects), np.full(len(subjects), 1 / len(subjects)),
                                                   size=resamples)
  p = (counts @ tp) / np.maximum(counts @ nd, 1)
  r = (counts @ tp) / np.maximum(counts @ nt, 1)
  f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
  alpha = (1 - confidence) / 2
  out.update(low=float(np.quantile(f1, alpha)), high=float(np.quantile(f1, 1 - alpha)),
             subjects=len(subjects))
  return out


# ---- Files: predictions, MiGA csv, timeline -------------------------------------------------------------

def _colour(label: int) -> tuple:
  r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.65, 0.9)
  return int(255 * r), int(255 * g), int(255 * b)


def timeline(videos: list, truth: dict, dets: dict, width: int = 900, row: int = 14) -> Image.Image:
  """Per video two bars, ground truth above and detections below, one colour per class."""
  img = Image.new('RGB', (width + 80, len(videos) * (3 * row + 6) + 6), 'white')
  draw = ImageDraw.Draw(img)
  for i, v in enumerate(videos):
    y = 6 + i * (3 * row + 6)
    draw.text((2, y + row // 2), v.video_id[:10], fill='black')
    scale = width / max(v.num_frames, 1)
    for k, items in enumerate((truth.get(v.video_id, []), dets.get(v.video_id, []))):
      top = y + k * (row + 2)
      draw.rectangle([76, top, 76 + width, top + row], outline=(200, 200, 200))
      for s in items:
        draw.rectangle([76 + s.start * scale, top + 1, 76 + max(s.end * scale, s.start * scale + 1), top + row - 1],
                       fill=_colour(s.label))
  return img


def write_files(workdir: str, dets: list, fps: dict) -> None:
  root = files.path(workdir) / 'spotting'
  files.write_json(root / 'predictions.json', [
      {'video': d.video, 'start': d.start, 'end': d.end, 'class': d.label, 'score': d.score,
       'start_s': d.start / fps[d.video], 'end_s': d.end / fps[d.video]} for d in dets])
  per_video: dict = {v: [] for v in fps}
  for d in dets:
    per_video[d.video].append(d)
  for v, items in per_video.items():
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    for d in sorted(items, key=lambda d: d.start):  # MiGA: classID,startFrame,endFrame (end inclusive)
      w.writerow([d.label + 1, int(round(d.start)), max(int(round(d.end)) - 1, int(round(d.start)))])
    files.write_atomic(root / 'miga' / f'{v}_label.csv', lambda f, text=buf.getvalue(): f.write(text))


# ---- The evaluator --------------------------------------------------------------------------------------

class Evaluator(common.Evaluator):
  """Spotting on the test subjects' whole videos with a temporal head trained on the train subjects'."""

  EXTRA = ('workdir',)
  settings = ('hop', 'stride')

  def __init__(self, clips: common.Clips, predict_fns: dict, hop: int = 8, stride: int = 0,
               pretrain: str = 'pretrain', layers: int = 2, width: int = 128, kernel: int = 5,
               steps: int = 400, lr: float = 1e-3, weight_decay: float = 1e-2, crop: int = 64,
               min_frames: float = 0, seed: int = 0, timeline_videos: int = 6,
               workdir: Optional[str] = None):
    self.clips, self.predict, self.workdir = clips, predict_fns['features'], workdir
    self.hop, self.stride, self.pretrain, self.min_frames = hop, stride or clips.stride, pretrain, min_frames
    self.head = dict(layers=layers, width=width, kernel=kernel, steps=steps, lr=lr,
                     weight_decay=weight_decay, crop=crop, seed=seed)
    self.timeline_videos = timeline_videos

  def _features(self, params, source, videos: list, split: str) -> list:
    c = self.clips

    def compute(v):
      got = dense.video_features(source, v, lambda x: self.predict(params, x), frames=c.frames,
                                 stride=self.stride, hop=self.hop, size=c.size, batch=c.batch)
      return {k: got[k] for k in ('features', 'centre', 'label', 'segments')}
    out = []
    for i in features_lib.progress(len(videos), f'{split} videos', unit='video'):
      v = videos[i]
      if c.cache_dir:
        key = {**(c.cache_key or {}), 'dense': v.video_id, 'hop': self.hop, 'stride': self.stride,
               'pretrain_records': self.pretrain}
        out.append(features_lib.cached(c.cache_dir, key, lambda v=v: compute(v)))
      else:
        out.append(compute(v))
    return out

  def evaluate(self, params) -> dict:
    try:
      source, videos = split_videos(self.clips.data_dir, self.clips.protocol, self.pretrain)
    except errors.DataError as e:  # no pretrain records, or built before frame labels: the other tasks run
      return {'skipped': str(e)}
    feats = {s: self._features(params, source, videos[s], s) for s in ('train', 'test')}
    truth = {s: [t for v, f in zip(videos[s], feats[s]) for t in truth_of(v, f['segments'])]
             for s in feats}
    classes = self.clips.num_classes + 1
    predict = train_head([f['features'] for f in feats['train']], [f['label'] + 1 for f in feats['train']],
                         classes, **self.head)
    dets = [d for v, f in zip(videos['test'], feats['test'])
            for d in detect(v.video_id, predict(f['features']), f['centre'], self.hop, self.min_frames)]
    subject_of = {v.video_id: v.subject_id for v in videos['test']}
    base, base_how = majority_baseline(truth['train'], videos['test'])
    out = {'hop': self.hop, 'stride': self.stride, 'train_videos': len(videos['train']),
           'test_videos': len(videos['test']), 'test_segments': len(truth['test'])}
    for thr in THRESHOLDS:
      r = f1_with_interval(dets, truth['test'], subject_of, thr)
      out[f'f1@{thr:g}'] = r['f1']
      out[f'f1@{thr:g}_interval'] = [r['low'], r['high']]
      out[f'precision@{thr:g}'], out[f'recall@{thr:g}'] = r['precision'], r['recall']
      b = f1_with_interval(base, truth['test'], subject_of, thr)
      out[f'baseline_f1@{thr:g}'] = b['f1']
      out[f'baseline_f1@{thr:g}_interval'] = [b['low'], b['high']]
    m = seg_lib.mean_ap(dets, truth['test'], MAP_THRESHOLDS)
    for thr in MAP_THRESHOLDS:
      out[f'mAP@{thr:g}'] = m[f'mAP@{thr:g}']
    out['per_class_ap@0.5'] = {str(k): v for k, v in m['per_class@0.5'].items()}
    out.update(detections=len(dets), baseline=base_how, interval='90% over test subjects')
    if self.workdir and jax.process_index() == 0:
      write_files(self.workdir, dets, {v.video_id: v.fps for v in videos['test']})
      shown = videos['test'][:self.timeline_videos]
      by_video = lambda items: {v.video_id: [s for s in items if s.video == v.video_id] for v in shown}
      picture = timeline(shown, by_video(truth['test']), by_video(dets))
      files.write_atomic(files.path(self.workdir) / 'spotting' / 'timeline.png',
                         lambda f: picture.save(f, format='PNG'), binary=True)
      out['files'] = 'spotting/'
    return out
