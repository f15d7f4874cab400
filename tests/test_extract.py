"""mgjax.extract: dense features of whole videos, read with numpy and json alone, equal to the evaluation's
features of the same windows, resumable, and the settings of an output directory kept apart."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mgjax import errors
from mgjax import extract as extract_lib
from mgjax.data import records
from mgjax.evals import features
from mgjax.evals import run as evaluate_lib
from configs import eval as eval_config
from tests import helpers

HOP = 2


def _read(out):
  """What a PyTorch user does: json + numpy, nothing of mgjax."""
  index = json.load(open(os.path.join(out, 'index.json')))
  got = {}
  for vid, entry in index['videos'].items():
    x = np.load(os.path.join(out, entry['features']))
    meta = json.load(open(os.path.join(out, entry['meta'])))
    assert x.dtype == np.float32 and x.shape[0] == entry['windows'] == len(meta['window_centre'])
    got[vid] = (x, meta)
  return index, got


def test_extract_reads_back_with_numpy_equals_evaluation_features_and_resumes(sample, built, pretrain_run,
                                                                             tmp_path):
  _, truth = sample
  out = str(tmp_path / 'dense')
  flags = [f'--checkpoint={pretrain_run}', f'--data_dir={built}', f'--hop={HOP}', '--batch=8']
  cmd = [sys.executable, '-m', 'mgjax.extract', *flags, f'--out={out}']
  first = subprocess.run(cmd + ['--videos=2,5'], cwd=helpers.REPO, capture_output=True, text=True)
  assert first.returncode == 0, first.stderr[-3000:]
  stamps = {f: os.path.getmtime(os.path.join(out, 'features', f)) for f in os.listdir(os.path.join(out, 'features'))}
  assert sorted(stamps) == ['2.json', '2.npy', '5.json', '5.npy']
  # A run killed between a video's features and its .json (the .json is written last) leaves this:
  os.replace(os.path.join(out, 'features', '5.json'), os.path.join(out, 'features', '5.json.tmp'))
  done = subprocess.run(cmd, cwd=helpers.REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert '1 of 9 videos were written before: skipped' in done.stderr
  assert os.path.getmtime(os.path.join(out, 'features', '2.npy')) == stamps['2.npy']  # not recomputed
  assert os.path.getmtime(os.path.join(out, 'features', '5.npy')) > stamps['5.npy']  # its .json was missing

  index, got = _read(out)
  assert sorted(got) == sorted(truth['videos']) and index['settings']['hop'] == HOP
  window, stride = index['settings']['window'], index['settings']['stride']
  span = records.window_span(window, stride)
  for vid, (x, meta) in got.items():
    t = truth['videos'][vid]
    starts = np.arange(0, t['num_frames'] - span + 1, HOP)
    np.testing.assert_array_equal(meta['window_start'], starts)
    np.testing.assert_allclose(meta['window_centre'], starts + (span - 1) / 2)
    assert meta['labelled'] == t['labelled'] and meta['subject_id'] == t['subject_id']
    segs = t['segments'] if t['labelled'] else []
    assert meta['segments'] == segs
    for c, label in zip(meta['window_centre'], meta['centre_label']):
      inside = [k for a, b, k in segs if a <= c <= b]
      assert label == (inside[0] if inside else -1)

  # The evaluation's feature of a clip (one window at its centre) is the extracted feature of the window
  # that starts on the same frame.
  c = eval_config.get_config()
  c.checkpoint, c.data_dir, c.num_clips, c.tasks = pretrain_run, built, 1, ('knn',)
  c.evals.knn.k = 3
  work = str(tmp_path / 'eval')
  evaluate_lib.evaluate(c, work)
  cache = [f for f in os.listdir(os.path.join(work, 'features'))
           if f.endswith('.json') and json.load(open(os.path.join(work, 'features', f)))['split'] == 'test']
  evaluated = np.load(os.path.join(work, 'features', cache[0].replace('.json', '.npz')))
  src = records.data_source(built, 'clips', 'test')
  compared = 0
  for i in range(len(src)):
    r = src[i]
    start = int(r['start_frame']) + int(features.window_indices(int(r['num_frames']), window, stride, 1)[0, 0])
    if start % HOP == 0 and int(r['num_frames']) >= span:
      x, _ = got[r['video_id'].decode()]
      np.testing.assert_allclose(x[start // HOP], evaluated['features'][i], rtol=1e-4, atol=1e-5)
      compared += 1
  assert compared >= 3

  # Two processes of 2 devices each (launch/local_multiprocess.sh): every video once, the same files.
  two = str(tmp_path / 'two')
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS='2')
  out2 = subprocess.run(['bash', 'launch/local_multiprocess.sh', '2', 'mgjax.extract', *flags, f'--out={two}'],
                        cwd=helpers.REPO, capture_output=True, text=True, env=env)
  assert out2.returncode == 0, out2.stderr[-3000:]
  assert 'process 1 of 2' in out2.stderr
  index2, got2 = _read(two)
  assert index2['videos'] == index['videos']
  for vid, (x, meta) in got.items():
    np.testing.assert_allclose(got2[vid][0], x, rtol=1e-5, atol=1e-6)
    assert got2[vid][1] == meta

  with pytest.raises(errors.ConfigError, match=r'holds features of other settings \(hop differ\)'):
    extract_lib.extract(pretrain_run, built, out, hop=HOP + 1)


def test_extract_of_records_without_frame_labels(pretrain_run, tmp_path):
  old = os.path.join(helpers.REPO, 'tests', 'data', 'records_1.0.0')  # builder version 1.0.0
  index = extract_lib.extract(pretrain_run, old, str(tmp_path), hop=4, batch=8)
  _, got = _read(str(tmp_path))
  assert sorted(got) == sorted(index['videos']) == ['1', '2']
  assert all(m['labelled'] is None and 'centre_label' not in m for _, m in got.values())
  extract_lib.extract(pretrain_run, old, str(tmp_path / 'block0'), hop=4, batch=8, layer=0)
  _, first_block = _read(str(tmp_path / 'block0'))
  for vid, (x, _) in got.items():
    assert first_block[vid][0].shape == x.shape and not np.allclose(first_block[vid][0], x)
  with pytest.raises(errors.ConfigError, match=r'layer 2: the T encoder has blocks 0\.\.1'):
    extract_lib.extract(pretrain_run, old, str(tmp_path / 'block2'), layer=2)
  with pytest.raises(errors.DataError, match=r"--videos: no video 7 in .*records_1.0.0 pretrain split 'all'"):
    extract_lib.extract(pretrain_run, old, str(tmp_path), hop=4, video_ids=['7'])
