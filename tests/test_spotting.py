"""Spotting: the temporal head learns what the features carry, decoding and the baseline on known cases,
the evaluator end to end on the built sample (results, MiGA files, timeline), older records named."""

import csv
import json
import os

import numpy as np
import pytest

from mgjax import errors
from mgjax.evals import run as evaluate_lib
from mgjax.evals import segments as seg_lib
from mgjax.evals import spotting
from configs import eval as eval_config
from tests import helpers


def _synthetic(rng, n_videos: int, windows: int = 120, dim: int = 16, noise: float = 0.8):
  """Videos of window features whose first 8 dimensions say the gesture (class 1..8, 0 = none) of the
  window, in runs of 4 to 8 windows separated by 2 to 6 windows of none."""
  xs, ys = [], []
  for _ in range(n_videos):
    y = np.zeros(windows, np.int64)
    t = int(rng.integers(1, 5))
    while t < windows - 8:
      n = int(rng.integers(4, 9))
      y[t:t + n] = rng.integers(1, 9)
      t += n + int(rng.integers(2, 7))
    x = rng.normal(0, noise, (windows, dim)).astype(np.float32)
    x[np.arange(windows), np.maximum(y - 1, 0)] += 2.0 * (y > 0)
    xs.append(x)
    ys.append(y)
  return xs, ys


def _runs(video, y, centres, hop):
  """Segments of the runs of one class in y (0 = none), with the half-hop edges of detections."""
  out, first = [], 0
  for i in range(1, len(y) + 1):
    if i == len(y) or y[i] != y[first]:
      if y[first]:
        out.append(seg_lib.Segment(video, centres[first] - hop / 2, centres[i - 1] + hop / 2, int(y[first]) - 1))
      first = i
  return out


def test_temporal_head_finds_gestures_the_features_carry_and_beats_the_majority_detector():
  rng = np.random.default_rng(0)
  xs, ys = _synthetic(rng, 44)
  predict = spotting.train_head(xs[:40], ys[:40], 9, steps=300, width=32, crop=48, seed=0)
  hop = 8
  dets, truth = [], []
  for v, (x, y) in enumerate(zip(xs[40:], ys[40:])):
    centres = np.arange(len(y)) * hop + 14.0
    dets += spotting.detect(str(v), predict(x), centres, hop)
    # truth: the runs of y, with the same half-hop edges as detections
    truth += _runs(str(v), y, centres, hop)
  r = seg_lib.miga_f1(dets, truth, 0.5)
  assert r['f1'] > 0.8, r
  videos = [type('V', (), {'video_id': str(v), 'num_frames': 120 * hop})() for v in range(4)]
  base, how = spotting.majority_baseline(truth, videos)
  assert seg_lib.miga_f1(base, truth, 0.5)['f1'] < 0.3 and how['length'] == np.median([t.end - t.start for t in truth])


def test_detect_and_majority_baseline_on_known_cases():
  # windows 8 frames apart centred at 0, 8, ..., 56: none, class 2 x3, none, class 0 x2, none
  probs = np.full((8, 4), 0.1)
  top = [0, 3, 3, 3, 0, 1, 1, 0]
  probs[np.arange(8), top] = 0.7
  probs[2, 3] = 0.9
  got = spotting.detect('v', probs, np.arange(8) * 8.0, 8)
  assert [(s.start, s.end, s.label) for s in got] == [(4.0, 28.0, 2), (36.0, 52.0, 0)]
  assert got[0].score == pytest.approx((0.7 + 0.9 + 0.7) / 3)
  assert spotting.detect('v', probs, np.arange(8) * 8.0, 8, min_frames=20) == got[:1]
  train = [seg_lib.Segment('a', 0, 10, 5), seg_lib.Segment('a', 20, 40, 5), seg_lib.Segment('b', 0, 30, 1)]
  video = type('V', (), {'video_id': 't', 'num_frames': 50})()
  dets, how = spotting.majority_baseline(train, [video])
  assert how == {'class': 5, 'length': 20.0}
  assert [(d.start, d.end, d.label) for d in dets] == [(0, 20, 5), (20, 40, 5), (40, 50, 5)]
  # the pooled F1 and its interval: one subject, so the interval is the point
  truth = [seg_lib.Segment('t', 22, 41, 5)]
  r = spotting.f1_with_interval(dets, truth, {'t': 7}, 0.5)
  assert r['f1'] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1)) == r['low'] == r['high']


def test_spotting_evaluator_end_to_end(built, pretrain_run, tmp_path):
  c = eval_config.get_config()
  c.checkpoint, c.data_dir, c.tasks = pretrain_run, built, ('spotting',)
  c.evals.spotting.update(steps=50, width=16)
  work = str(tmp_path / 'eval')
  r = evaluate_lib.evaluate(c, work)['spotting']
  assert (r['train_videos'], r['test_videos']) == (4, 4) and r['test_segments'] > 5
  for k in ('f1@0.3', 'f1@0.5', 'baseline_f1@0.3', 'baseline_f1@0.5', 'mAP@0.3', 'mAP@0.5', 'mAP@0.7'):
    assert 0.0 <= r[k] <= 1.0, k
  for k in ('f1@0.5', 'baseline_f1@0.5'):
    assert r[f'{k}_interval'][0] <= r[k] + 1e-9 and r[k] <= r[f'{k}_interval'][1] + 1e-9
  assert r['f1@0.3'] >= r['f1@0.5']
  saved = json.load(open(os.path.join(work, 'results.json')))['spotting']
  assert saved == json.loads(json.dumps(r))
  preds = json.load(open(os.path.join(work, 'spotting', 'predictions.json')))
  assert len(preds) == r['detections'] > 0
  assert set(preds[0]) == {'video', 'start', 'end', 'class', 'score', 'start_s', 'end_s'}
  # the MiGA files: one per test video, rows classID (1..32), startFrame, endFrame
  miga = os.path.join(work, 'spotting', 'miga')
  rows = [row for f in sorted(os.listdir(miga)) for row in csv.reader(open(os.path.join(miga, f)))]
  assert len(os.listdir(miga)) == 4 and len(rows) == len(preds)
  assert all(1 <= int(k) <= 32 and 0 <= int(a) <= int(b) for k, a, b in rows)
  assert os.path.getsize(os.path.join(work, 'spotting', 'timeline.png')) > 1000
  # the dense features were cached: a second evaluation reads them and gives the same scores
  cached = sorted(os.listdir(os.path.join(work, 'features')))
  assert len(cached) == 2 * 8
  again = evaluate_lib.evaluate(c, work)['spotting']
  assert again == r and sorted(os.listdir(os.path.join(work, 'features'))) == cached


def test_spotting_on_records_without_frame_labels_names_them():
  old = os.path.join(helpers.REPO, 'tests', 'data', 'records_1.0.0')
  with pytest.raises(errors.DataError, match='no per-frame micro-gesture labels, which spotting needs'):
    spotting.split_videos(old, {})
  clips = type('Clips', (), {'data_dir': old, 'protocol': {}, 'stride': 4})()
  skipped = spotting.Evaluator(clips, {'features': None}).evaluate(None)
  assert list(skipped) == ['skipped'] and 'records of builder version 1.0.0' in skipped['skipped']
