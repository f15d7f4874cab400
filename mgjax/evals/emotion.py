"""Emotion (video-level win / lose) on the protocol's emotion split, two ways:
- from clip features: the mean feature of a video's clips -> logistic regression;
- from micro-gestures: the histogram of a video's predicted classes (kNN over the recognition train
  split) -> logistic regression.
"""

import numpy as np

from mgjax.evals import common, knn, linear_probe, metrics


def _per_video(values: np.ndarray, video_ids: np.ndarray, videos: list) -> np.ndarray:
  return np.stack([values[video_ids == v].mean(0) for v in videos])


def evaluate(clips: dict, train_videos: list, test_videos: list, mg_train: dict, num_classes: int,
             steps: int = 300) -> dict:
  """clips: features of every labelled clip (train and test splits); mg_train: the recognition train split."""
  have = set(clips['video_id'].tolist())
  train_v = [v for v in map(str, train_videos) if v in have]
  test_v = [v for v in map(str, test_videos) if v in have]
  if not train_v or not test_v or len({_emotion(clips, v) for v in train_v}) < 2:
    return {'skipped': 'emotion split has no usable train or test videos with clips'}
  y_tr = np.array([_emotion(clips, v) for v in train_v])
  y_te = np.array([_emotion(clips, v) for v in test_v])
  out = {'train_videos': len(train_v), 'test_videos': len(test_v)}
  feat = _per_video(clips['features'], clips['video_id'], train_v + test_v)
  predict = linear_probe.fit(feat[:len(train_v)], y_tr, 2, steps)
  out['from_features'] = metrics.binary(predict(feat[len(train_v):]).argmax(1), y_te)
  pred = knn.scores(mg_train['features'], mg_train['label'], clips['features'], num_classes).argmax(1)
  hist = np.eye(num_classes)[pred]
  h = _per_video(hist, clips['video_id'], train_v + test_v)
  predict = linear_probe.fit(h[:len(train_v)], y_tr, 2, steps)
  out['from_gesture_histogram'] = metrics.binary(predict(h[len(train_v):]).argmax(1), y_te)
  return out


def _emotion(clips: dict, video: str) -> int:
  return int(clips['emotion'][clips['video_id'] == video][0])


class Evaluator(common.Evaluator):
  """Win / lose of the protocol's emotion test videos from their clips' frozen features."""

  def __init__(self, clips: common.Clips, predict_fns: dict, steps: int = 300):
    self.clips, self.predict, self.steps = clips, predict_fns['features'], steps

  def evaluate(self, params) -> dict:
    f = self.clips.features(self.predict, params)
    proto = self.clips.protocol.get('emotion', {})
    both = {k: np.concatenate([f['train'][k], f['test'][k]]) for k in f['train']}
    return evaluate(both, proto.get('train_video_ids', []), proto.get('test_video_ids', []), f['train'],
                    self.clips.num_classes, self.steps)
