"""The tfds_imigue3k builder on generated sample data: splits, features, frames, quality scores."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mgjax import errors
from mgjax.data import records
from tests import helpers
from tfds_imigue3k import labels as labels_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _official():
  return json.load(open(labels_lib.PROTOCOL_JSON))['mg_recognition']


def _segments_by_split(truth):
  proto = _official()
  out = {'train': [], 'test': []}
  for vid, v in sorted(truth['videos'].items(), key=lambda kv: int(kv[0])):
    if not v['labelled']:
      continue
    split = 'test' if v['subject_id'] in proto['test_subject_ids'] else 'train'
    out[split] += [(vid, li, seg) for li, seg in enumerate(v['segments'], 1)]
  return out


def test_clip_splits_counts_and_labels(sample, built):
  _, truth = sample
  expected = _segments_by_split(truth)
  raw_of = {v: k for k, v in labels_lib.read_classes().items()}
  for split, segs in expected.items():
    src = records.data_source(built, 'clips', split)
    assert len(src) == len(segs) > 0
    for i, (vid, label_id, (start, end, cls)) in enumerate(segs):
      r = src[i]
      assert (r['video_id'].decode(), r['label_id']) == (vid, label_id)
      assert (r['start_frame'], r['end_frame'], r['num_frames']) == (start, end, end - start + 1)
      assert r['label'] == cls and r['raw_class'] == raw_of[cls]
      assert r['emotion'] == truth['videos'][vid]['emotion']
      assert r['subject_id'] == truth['videos'][vid]['subject_id']
      assert len(r['frames']) == r['num_frames']
      assert (r['width'], r['height'], r['fps']) == (160, 96, 25.0)  # short side 96 < 256: not upscaled


def test_pretrain_splits_keep_test_subjects_out(sample, built):
  _, truth = sample
  test_subjects = set(_official()['test_subject_ids'])
  chunks = lambda vids: sum(-(-truth['videos'][v]['num_frames'] // 64) for v in vids)
  heldout = [v for v, t in truth['videos'].items() if t['subject_id'] in test_subjects]
  train = [v for v in truth['videos'] if v not in heldout]
  src = {s: records.data_source(built, 'pretrain', s) for s in ('train', 'heldout', 'all')}
  assert len(src['train']) == chunks(train) and len(src['heldout']) == chunks(heldout)
  assert len(src['all']) == len(src['train']) + len(src['heldout'])
  assert {src['train'][i]['subject_id'] for i in range(len(src['train']))}.isdisjoint(test_subjects)
  # Unlabelled videos (videos.csv only) are in pretraining.
  unlabelled = {v for v, t in truth['videos'].items() if not t['labelled']}
  assert unlabelled and unlabelled <= {src['all'][i]['video_id'].decode() for i in range(len(src['all']))}
  # Chunks of a video follow each other in order.
  prev = None
  for i in range(len(src['all'])):
    r = src['all'][i]
    if prev is not None and prev['video_id'] == r['video_id']:
      assert r['chunk_index'] == prev['chunk_index'] + 1
      assert r['start_frame'] == prev['start_frame'] + prev['num_frames']
    else:
      assert r['chunk_index'] == 0
    prev = r


def test_clip_frames_are_the_source_frames(sample, built):
  manual, _ = sample
  src = records.data_source(built, 'clips', 'train')
  r = src[3]
  video = helpers.decode_all(os.path.join(manual, 'videos', f"{r['video_id'].decode()}.mp4"))
  helpers.assert_frames_match(records.decode_jpegs(r['frames']), video,
                              range(r['start_frame'], r['end_frame'] + 1))


def test_window_crosses_chunks_and_matches_source(sample, built):
  manual, truth = sample
  src = records.data_source(built, 'pretrain', 'all')
  first = src[0]
  vid = first['video_id'].decode()
  video = helpers.decode_all(os.path.join(manual, 'videos', f'{vid}.mp4'))
  # Start at frame 50 of chunk 0: frames 50, 54, ..., 110 span chunks 0 and 1.
  win = records.read_window(src, 0, 50, 16, 4)
  assert win.shape == (16, 96, 160, 3)
  helpers.assert_frames_match(win, video, range(50, 111, 4))
  # The last window of the video ends on its last frame; one frame later runs past the end.
  n = first['video_num_frames']
  k = (n - 61) // 64  # chunk holding the last valid start
  off = records.valid_offsets(src[k], 16, 4)
  assert off == n - 61 - 64 * k + 1 and records.valid_offsets(src[k + 1], 16, 4) == 0
  helpers.assert_frames_match(records.read_window(src, k, off - 1, 16, 4), video, range(n - 61, n, 4))
  with pytest.raises(ValueError, match=f"runs past the end of video b'{vid}'"):
    records.read_window(src, k, off, 16, 4)


def test_quality_scores_find_cuts_and_static_chunks(sample, built):
  _, truth = sample
  src = records.data_source(built, 'pretrain', 'all')
  cuts, static_energy, other_energy = {}, [], []
  for i in range(len(src)):
    r = src[i]
    v = truth['videos'][r['video_id'].decode()]
    cuts.setdefault(r['video_id'].decode(), []).extend(int(r['start_frame'] + j) for j in np.nonzero(r['cut'])[0])
    inside = [c for c in v['cuts'] if r['start_frame'] < c < r['start_frame'] + r['num_frames']]
    assert bool(r['has_cut']) == bool(inside)
    end = r['start_frame'] + r['num_frames']
    (static_energy if end <= v['static'][1] else other_energy).append(float(r['motion_energy']))
  assert cuts == {vid: v['cuts'] for vid, v in truth['videos'].items()}
  assert static_energy and max(static_energy) < 0.2 * np.median(other_energy)


def test_frame_labels_and_segments_follow_the_generated_truth(sample, built):
  _, truth = sample
  src = records.data_source(built, 'pretrain', 'all')
  labels, segments = {}, {}
  for i in range(len(src)):
    r = src[i]
    vid = r['video_id'].decode()
    assert bool(r['labelled']) == truth['videos'][vid]['labelled']
    assert len(r['frame_label']) == r['num_frames']
    labels.setdefault(vid, []).extend(r['frame_label'].tolist())
    for s in r['segments'].tolist():  # every listed segment overlaps the chunk
      assert s[1] >= r['start_frame'] and s[0] < r['start_frame'] + r['num_frames']
      segments.setdefault(vid, set()).add(tuple(s))
  for vid, v in truth['videos'].items():
    want = np.full(v['num_frames'], records.NO_GESTURE)
    segs = v['segments'] if v['labelled'] else []
    for a, b, c in segs:
      want[a:b + 1] = c
    np.testing.assert_array_equal(labels[vid], want, err_msg=vid)
    assert segments.get(vid, set()) == {tuple(s) for s in segs}
  assert sum(map(len, segments.values())) > 20


def test_older_records_still_pretrain_and_name_their_version_for_frame_labels():
  old = os.path.join(REPO, 'tests', 'data', 'records_1.0.0')  # written by builder version 1.0.0
  src = records.data_source(old, 'pretrain', 'all')
  assert str(src.dataset_info.version) == '1.0.0' and 'frame_label' not in src[0]
  assert records.read_window(src, 0, 2, 8, 2).shape == (8, 48, 64, 3)
  with pytest.raises(errors.DataError, match=r'pretrain/1\.0\.0: records of builder version 1\.0\.0 have no '
                     r'per-frame micro-gesture labels, which spotting needs \(builder version 1\.1\.0 on\)'):
    records.require_frame_labels(src, old, 'spotting')


def test_reading_never_imports_tensorflow(built):
  code = f"""
import sys
from mgjax.data import records
src = records.data_source({built!r}, 'pretrain', 'all')
w = records.read_window(src, 0, 3, 16, 4)
c = records.data_source({built!r}, 'clips', 'test')[0]
assert w.shape == (16, 96, 160, 3) and len(c['frames']) == c['num_frames']
assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
print('ok')
"""
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-2000:]


def test_number_of_workers_does_not_change_records(sample, built, tmp_path):
  manual, _ = sample
  helpers.build(manual, str(tmp_path), 'pretrain', num_workers=1)
  for split in ('train', 'heldout'):
    helpers.assert_same_records(records.data_source(built, 'pretrain', split),
                                records.data_source(str(tmp_path), 'pretrain', split))


def test_custom_config_resizes_and_chunks(sample, tmp_path):
  from tfds_imigue3k import Imigue3kConfig  # pylint: disable=g-import-not-at-top
  manual, truth = sample
  cfg = Imigue3kConfig(name='pretrain_48', short_side=48, chunk_frames=32)
  helpers.build(manual, str(tmp_path), cfg)
  src = records.data_source(str(tmp_path), 'pretrain_48', 'all')
  assert len(src) == sum(-(-v['num_frames'] // 32) for v in truth['videos'].values())
  r = src[0]
  assert (r['width'], r['height'], r['num_frames']) == (80, 48, 32)
  vid = r['video_id'].decode()
  video = helpers.decode_all(os.path.join(manual, 'videos', f'{vid}.mp4'), 80, 48)
  win = records.read_window(src, 0, 20, 16, 4)  # frames 20..80 over 3 chunks
  assert win.shape == (16, 48, 80, 3)
  helpers.assert_frames_match(win, video, range(20, 81, 4), tol=8.0)  # JPEG and resize error: larger when small


def test_cli_build_gives_the_same_records(sample, built, tmp_path):
  """The real `tfds build` command line (needs tensorflow, apache-beam, mlcroissant installed)."""
  manual, _ = sample
  tfds_cli = os.path.join(os.path.dirname(sys.executable), 'tfds')
  cmd = [tfds_cli, 'build', 'imigue3k', '--imports=tfds_imigue3k', f'--manual_dir={manual}',
         f'--data_dir={tmp_path}', '--file_format=array_record']
  env = dict(os.environ, IMIGUE3K_WORKERS='2', PYTHONPATH=REPO)
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  for config, splits in (('clips', ('train', 'test')), ('pretrain', ('train', 'heldout'))):
    for split in splits:
      helpers.assert_same_records(records.data_source(built, config, split),
                                  records.data_source(str(tmp_path), config, split))
  version = records.READABLE_VERSIONS[-1]
  info = tfds.builder_from_directory(os.path.join(str(tmp_path), 'imigue3k', 'clips', version)).info
  assert info.features['label'].num_classes == 32 and 'liu2021imigue' in info.citation
