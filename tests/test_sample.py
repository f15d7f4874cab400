"""The sample generator: deterministic, in the real layout, with learnable gestures and emotion."""

import filecmp
import os

import numpy as np
import pytest

from tests import helpers
from tfds_imigue3k import labels as labels_lib
from tfds_imigue3k import sample as sample_lib


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
  args = dict(subjects=2, videos_per_subject=1, unlabelled=1, frames=80, width=96, height=64, seed=5)
  sample_lib.generate(str(tmp_path / 'a'), workers=1, **args)
  sample_lib.generate(str(tmp_path / 'b'), workers=2, **args)
  files = sorted(os.listdir(tmp_path / 'a' / 'videos')) + ['labels.csv', 'videos.csv', 'protocol.json']
  assert len(files) == 6
  for f in files:
    sub = 'videos' if f.endswith('.mp4') else ''
    assert filecmp.cmp(tmp_path / 'a' / sub / f, tmp_path / 'b' / sub / f, shallow=False), f
  sample_lib.generate(str(tmp_path / 'c'), workers=1, **dict(args, seed=6))
  assert not filecmp.cmp(tmp_path / 'a' / 'labels.csv', tmp_path / 'c' / 'labels.csv', shallow=False)


def test_sample_is_valid_input_in_the_real_layout(sample):
  manual, truth = sample
  problems = []
  segments, videos = labels_lib.read_labels(os.path.join(manual, 'labels.csv'), labels_lib.read_classes(),
                                            problems)
  labels_lib.read_videos_csv(os.path.join(manual, 'videos.csv'), videos, problems)
  proto = labels_lib.read_protocol(os.path.join(manual, 'protocol.json'), problems)
  assert problems == []
  assert len(videos) == len(truth['videos']) == 9
  assert len(segments) == sum(len(v['segments']) for v in truth['videos'].values() if v['labelled'])
  assert set(proto['emotion_train_videos']) | set(proto['emotion_test_videos']) == {
      v for v, t in truth['videos'].items() if t['labelled']}
  for vid in videos:
    frames = helpers.decode_all(os.path.join(manual, 'videos', f'{vid}.mp4'))
    assert frames.shape == (240, 96, 160, 3)


def test_gestures_move_the_figure_and_differ_by_class(tmp_path):
  """Every class changes the picture away from idle, and classes differ from each other."""
  rng = np.random.default_rng(0)
  subject = sample_lib._make_subject(rng, 1)  # pylint: disable=protected-access
  view = sample_lib._make_view(rng)  # pylint: disable=protected-access
  renderer = sample_lib.Renderer(160, 96, subject)
  r = subject.head_r * 96 * view.zoom
  idle = np.zeros(4)
  pose = lambda seg, t: sample_lib._scale_osc(sample_lib._pose(idle, t, seg), r)  # pylint: disable=protected-access
  still = renderer.draw(view, pose(None, 20)).astype(np.float32)
  peaks = []
  for cls in range(32):
    img = renderer.draw(view, pose((0, 40, cls), 20)).astype(np.float32)
    changed = (np.abs(img - still).max(-1) > 30).sum()
    assert changed >= 4, f'class {cls} barely changes the picture ({changed} pixels)'
    peaks.append(img)
  for a in range(32):
    for b in range(a + 1, 32):
      assert np.abs(peaks[a] - peaks[b]).max() > 30, f'classes {a} and {b} look the same at their peak'


def test_emotion_depends_on_gestures():
  for emotion, boosted, other in ((1, sample_lib.POSITIVE, sample_lib.NEGATIVE),
                                  (0, sample_lib.NEGATIVE, sample_lib.POSITIVE)):
    p = sample_lib._class_probs(emotion)  # pylint: disable=protected-access
    assert p[list(boosted)].sum() > 2 * p[list(other)].sum()


def test_more_subjects_than_the_protocol_has_is_an_error(tmp_path):
  # 72 subjects at the default test fraction: 45 train, but the protocol has 37 train subjects.
  with pytest.raises(ValueError, match='45 train and 27 test subjects, but the official protocol has 37 train'):
    sample_lib.generate(str(tmp_path), subjects=72)
  assert not os.listdir(tmp_path)  # nothing written


def test_players_add_unlabelled_videos_and_leave_the_labelled_ones_as_they_were(tmp_path):
  args = dict(subjects=2, videos_per_subject=1, unlabelled=0, frames=60, width=96, height=64, seed=5, workers=1)
  sample_lib.generate(str(tmp_path / 'a'), **args)
  truth = sample_lib.generate(str(tmp_path / 'b'), players=2, player_videos=2, **args)
  for f in ('labels.csv', 'protocol.json', 'videos/1.mp4', 'videos/2.mp4'):
    assert filecmp.cmp(tmp_path / 'a' / f, tmp_path / 'b' / f, shallow=False), f
  problems = []
  _, videos = labels_lib.read_labels(str(tmp_path / 'b' / 'labels.csv'), labels_lib.read_classes(), problems)
  labels_lib.read_videos_csv(str(tmp_path / 'b' / 'videos.csv'), videos, problems)
  assert problems == []
  players = {v: t for v, t in truth['videos'].items() if not t['labelled']}
  assert sorted(players) == ['3', '4', '5', '6'] and set(videos) == set(truth['videos'])
  assert {t['subject_id'] for t in players.values()} == {sample_lib.PLAYER_ID_BASE, sample_lib.PLAYER_ID_BASE + 1}
  proto = labels_lib.read_protocol(str(tmp_path / 'b' / 'protocol.json'), problems)
  assert not {t['subject_id'] for t in players.values()} & (
      proto['train_subjects'] | proto['test_subjects'])
  assert os.path.getsize(tmp_path / 'b' / 'videos' / '6.mp4') > 0
