"""Evaluation: the five tasks end to end on built sample clips, results.json schema, cached features,
and the evaluators on cases with known answers."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from mgjax.evals import compare as compare_lib
from mgjax.evals import run as evaluate_lib
from mgjax import weights
from mgjax.data import records
from mgjax.evals import attentive_probe, common, features, knn, linear_probe, metrics, recognition, retrieval
from mgjax.models import classifier as classifier_lib
from mgjax.models import videomae
from configs import eval as eval_config
from tests import helpers

TINY = dict(size='T', frames=4, image_size=32, patch=16, tubelet=2, decoder_depth=1, mask_ratio=0.5)


def _config(checkpoint, data_dir, **kw):
  c = eval_config.get_config()
  c.checkpoint, c.data_dir = checkpoint, data_dir
  c.model.update(TINY)
  c.num_clips = 1
  c.evals.recognition.update(test_clips=2, test_crops=3)
  c.evals.knn.k = 5
  c.evals.linear_probe.steps = 50
  c.evals.spotting.update(steps=50, width=16)
  c.evals.attentive_probe.update(steps=30, wd=(1e-2,))
  for k, v in kw.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope='module')
def classifier_dir(tmp_path_factory):
  cfg = videomae.ModelConfig(**TINY, dtype='float32')
  params = nnx.state(classifier_lib.VideoClassifier(cfg, 32, init_scale=1.0, rngs=nnx.Rngs(0)),
                     nnx.Param).to_pure_dict()
  out = str(tmp_path_factory.mktemp('classifier'))
  weights.write(weights.Weights(params, cfg, num_classes=32), 'hf', out)
  return out


def _check_classification(r):
  for k in ('top1', 'top5', 'mean_class_accuracy'):
    assert 0.0 <= r[k] <= 1.0
  assert r['top5'] >= r['top1'] and r['per_class_accuracy']
  assert all(0 <= int(c) < 32 and 0 <= a <= 1 for c, a in r['per_class_accuracy'].items())


def test_five_tasks_end_to_end(built, classifier_dir, tmp_path):
  work = str(tmp_path / 'eval')
  config = _config(classifier_dir, built)
  c_l2 = tuple(config.evals.linear_probe.l2)
  results = evaluate_lib.evaluate(config, work)
  saved = json.load(open(os.path.join(work, 'results.json')))
  assert saved == json.loads(json.dumps(results))
  assert set(common.TYPES) <= set(saved)
  assert saved['checkpoint_read'] == classifier_dir and len(saved['weights']) == 16
  _check_classification(saved['knn'])
  assert saved['knn']['k'] == 5
  _check_classification(saved['attentive_probe'])
  assert saved['attentive_probe']['wd'] == 1e-2
  lp = saved['linear_probe']
  _check_classification(lp)
  assert lp['l2'] in c_l2 and set(lp['cv_top1']) == {str(v) for v in c_l2}
  r = saved['retrieval']
  assert 0 <= r['recall@1'] <= r['recall@5'] <= r['recall@10'] <= 1 and 0 < r['mAP'] <= 1
  assert r['queries'] == len(records.data_source(built, 'clips', 'test'))
  e = saved['emotion']
  assert e['train_videos'] > 0 and e['test_videos'] > 0
  for how in ('from_features', 'from_gesture_histogram'):
    assert 0 <= e[how]['accuracy'] <= 1 and 0 <= e[how]['f1'] <= 1 and e[how]['count'] == e['test_videos']
  rec = saved['recognition']
  _check_classification(rec)
  assert rec['views'] == 6 and os.path.exists(os.path.join(work, rec['confusion_png']))
  report = open(os.path.join(work, 'report.md')).read()
  assert '| knn | top1 |' in report and '| recognition | top1 |' in report
  # Per-clip predictions, for mgjax.compare: they give back the top-1 of results.json.
  p = compare_lib.load(work)
  n_test = len(records.data_source(built, 'clips', 'test'))
  for task in ('knn', 'linear_probe', 'recognition'):
    assert p[f'{task}.pred'].shape == p[f'{task}.label'].shape == p[f'{task}.subject_id'].shape == (n_test,)
    assert (p[f'{task}.pred'] == p[f'{task}.label']).mean() == pytest.approx(saved[task]['top1'])
  np.testing.assert_array_equal(p['knn.subject_id'], p['recognition.subject_id'])
  assert not [f for f in os.listdir(work) if f.endswith('.tmp')]


def test_features_are_cached_and_reused(built, tmp_path):
  work = str(tmp_path / 'eval')
  first = evaluate_lib.evaluate(_config('random', built, tasks=('knn', 'recognition')), work)
  cache = sorted(os.listdir(os.path.join(work, 'features')))
  assert len([f for f in cache if f.endswith('.npz')]) == 2  # train and test
  stamps = {f: os.path.getmtime(os.path.join(work, 'features', f)) for f in cache}
  again = evaluate_lib.evaluate(_config('random', built, tasks=('knn',)), work)
  assert again['knn'] == first['knn']
  assert {f: os.path.getmtime(os.path.join(work, 'features', f)) for f in cache} == stamps
  assert first['recognition'] == {'skipped': 'recognition needs a fine-tuned (classifier) checkpoint'}


def test_unknown_task_is_an_error(built, tmp_path):
  with pytest.raises(ValueError, match=r"unknown task\(s\) \['knnn'\]"):
    evaluate_lib.evaluate(_config('random', built, tasks=('knnn',)), str(tmp_path))


def test_knn_and_retrieval_on_known_cases():
  train = {'features': np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32), 'label': np.array([0, 0, 1, 1])}
  test = {'features': np.array([[1, 0.05], [0.05, 1]], np.float32), 'label': np.array([0, 1])}
  r = knn.evaluate(train, test, num_classes=2, k=2)
  assert r['top1'] == 1.0 and r['mean_class_accuracy'] == 1.0
  r = retrieval.evaluate(train, test)
  assert r['recall@1'] == 1.0 and r['mAP'] == 1.0
  # One query whose relevant items rank 1st and 3rd: AP = (1/1 + 2/3) / 2.
  g = {'features': np.array([[1, 0], [0.8, 0.6], [0.6, 0.8]], np.float32), 'label': np.array([0, 1, 0])}
  q = {'features': np.array([[1, 0]], np.float32), 'label': np.array([0])}
  assert retrieval.evaluate(g, q)['mAP'] == pytest.approx((1 + 2 / 3) / 2)


def test_linear_probe_cross_validation_picks_the_penalty_that_generalises():
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(4), [60, 20, 20, 20])  # class 0 is half the clips
  x = rng.normal(size=(120, 8)).astype(np.float32)
  x[np.arange(120), y] += 4.0  # class c lifts feature c: separable
  subjects = np.tile(np.arange(6), 20)
  fold = linear_probe.fold_of(subjects, 3)
  assert set(fold) == {0, 1, 2}
  assert all(len(set(fold[subjects == s])) == 1 for s in range(6))  # a subject stays in one fold
  # A penalty of 100 shrinks the weights until the bias (class 0) decides; cross-validation must see that.
  best, cv = linear_probe.select_l2(x, y, subjects, 4, (1e-4, 100.0), folds=3, steps=200)
  assert best == 1e-4 and cv['0.0001'] > 0.9 and cv['100.0'] < 0.6
  test = {'features': x[::3] + 0.1, 'label': y[::3]}
  r = linear_probe.evaluate({'features': x, 'label': y, 'subject_id': subjects}, test, 4, steps=200,
                            l2=(1e-4, 100.0))
  assert r['l2'] == 1e-4 and r['folds'] == 3 and r['top1'] > 0.9
  assert 'cv_top1' not in linear_probe.evaluate({'features': x, 'label': y}, test, 4, steps=200, l2=1e-4)


def test_binary_metrics_and_windows():
  m = metrics.binary(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
  assert m == {'accuracy': 0.5, 'f1': 0.5, 'count': 4}
  idx = features.window_indices(num_frames=10, frames=4, stride=4, num_clips=2)
  assert idx.tolist() == [[0, 4, 8, 9], [0, 4, 8, 9]]  # shorter than a window: last frame repeats
  idx = features.window_indices(num_frames=40, frames=4, stride=2, num_clips=3)
  assert idx[0, 0] == 0 and idx[-1, -1] == 39 and idx.shape == (3, 4)
  idx = features.window_indices(num_frames=40, frames=4, stride=2, num_clips=1)
  assert idx.tolist() == [[16, 18, 20, 22]]  # one window: the centre of the segment, not its start


def test_three_crops_span_the_long_side():
  # A 2-frame 40x80 video: left quarter red, right quarter blue, the middle green.
  v = np.zeros((2, 40, 80, 3), np.uint8)
  v[:, :, :20, 0] = 255
  v[:, :, 20:60, 1] = 255
  v[:, :, 60:, 2] = 255
  crops = features.resize_crops(v, 20, 3)  # short side 40 -> 20: frames 20x40, crops at x = 0, 10, 20
  assert crops.shape == (3, 2, 20, 20, 3)
  assert crops[0, :, :, :8, 0].min() > 200 and crops[2, :, :, -8:, 2].min() > 200
  assert crops[1, :, :, :, 1].min() > 200  # the centre crop is all green
  np.testing.assert_array_equal(features.resize_crops(v, 20, 1)[0], crops[1])


def test_temporal_std_pooling_keeps_what_moves():
  # 2 temporal slots x 3 positions x 2 channels; position 1 changes over time in channel 0 only.
  tokens = np.zeros((1, 2, 3, 2), np.float32)
  tokens[:, :, :, 1] = 5.0  # constant everywhere: the scene
  tokens[0, 0, 1, 0], tokens[0, 1, 1, 0] = -1.0, 1.0
  flat = tokens.reshape(1, 6, 2)
  np.testing.assert_allclose(features.pool_tokens(flat, 2, 'mean'), [[0.0, 5.0]])
  np.testing.assert_allclose(features.pool_tokens(flat, 2, 'temporal_std'), [[1 / 3, 0.0]], rtol=1e-6)
  # The grid keeps where the change is: position 1, channel 0.
  np.testing.assert_allclose(features.pool_tokens(flat, 2, 'temporal_std_grid'), [[0, 0, 1, 0, 0, 0]], atol=1e-6)
  with pytest.raises(ValueError, match="unknown pooling 'max'"):
    features.pool_tokens(flat, 2, 'max')


def test_pooling_is_recorded_and_cached_apart(built, tmp_path):
  work = str(tmp_path / 'eval')
  mean = evaluate_lib.evaluate(_config('random', built, tasks=('knn',)), work)
  std = evaluate_lib.evaluate(_config('random', built, tasks=('knn',), pooling='temporal_std'), work)
  assert (mean['pooling'], std['pooling']) == ('mean', 'temporal_std')
  assert len([f for f in os.listdir(os.path.join(work, 'features')) if f.endswith('.npz')]) == 4
  assert 'temporal_std pooling' in open(os.path.join(work, 'report.md')).read()
  with pytest.raises(ValueError, match="config.pooling: unknown pooling 'max'"):
    evaluate_lib.evaluate(_config('random', built, tasks=('knn',), pooling='max'), work)


def test_compare_gives_the_difference_and_a_subject_bootstrap_interval(tmp_path):
  label = np.zeros(8, np.int64)
  subject = np.repeat([1, 2, 3, 4], 2)
  a = {'knn.pred': label.copy(), 'knn.label': label, 'knn.subject_id': subject}
  wrong = np.ones(8, np.int64)
  b = {'knn.pred': wrong, 'knn.label': label, 'knn.subject_id': subject}
  r = compare_lib.compare(a, b)['knn']
  assert (r['top1_a'], r['top1_b'], r['difference'], r['low'], r['high']) == (100, 0, 100, 100, 100)
  assert (r['clips'], r['subjects']) == (8, 4)
  # B wrong on subject 1 only: the difference (25 points) rests on one person of four, so resampling
  # people gives 25 points per draw of subject 1: 0 with probability 0.32, at most 50 with 0.95 (binomial,
  # 4 draws of 1/4), so the 80% interval is [0, 50].
  b['knn.pred'] = np.where(subject == 1, 1, 0)
  r = compare_lib.compare(a, b, resamples=4000, confidence=0.8)['knn']
  assert (r['difference'], r['low'], r['high']) == (25, 0, 50)
  assert compare_lib.compare(a, {k.replace('knn', 'recognition'): v for k, v in b.items()}) == {}
  b['knn.label'] = np.ones(8, np.int64)
  with pytest.raises(ValueError, match='knn: A and B were not evaluated on the same test clips'):
    compare_lib.compare(a, b)
  with pytest.raises(FileNotFoundError, match='predictions.npz does not exist'):
    compare_lib.load(str(tmp_path))
  # The binary, on two workdirs.
  b['knn.label'] = label
  for name, p in (('a', a), ('b', b)):
    os.makedirs(tmp_path / name)
    np.savez(tmp_path / name / 'predictions.npz', **p)
  out = subprocess.run([sys.executable, '-m', 'mgjax.compare', str(tmp_path / 'a'), str(tmp_path / 'b'),
                        '--confidence=0.8', '--resamples=4000'], capture_output=True, text=True, check=True,
                       cwd=helpers.REPO).stdout
  assert '| knn | 100.0 | 75.0 | +25.0 | [+0.0, +50.0] | 8 / 4 |' in out


def test_progress_in_a_log_file_is_log_lines(caplog):
  caplog.set_level('INFO')
  assert list(features.progress(5, 'test features')) == [0, 1, 2, 3, 4]  # pytest's stderr is no terminal
  assert [r.getMessage().split(',')[0] for r in caplog.records] == ['test features: 5/5 clips']


def test_feature_cache_follows_the_weights_not_the_path(built, classifier_dir, tmp_path):
  # An export written again at the same path (as a workdir that trained on) gets new features, not the
  # cached ones of the old weights.
  ckpt, work = str(tmp_path / 'ckpt'), str(tmp_path / 'eval')
  w = weights.load(classifier_dir)
  weights.write(w, 'hf', ckpt)
  evaluate_lib.evaluate(_config(ckpt, built, tasks=('knn',)), work)
  params = jax.tree.map(lambda x: np.asarray(x) * 1.5 + 0.01, w.params)
  weights.write(weights.Weights(params, w.model, w.num_classes), 'hf', ckpt)
  evaluate_lib.evaluate(_config(ckpt, built, tasks=('knn',)), work)
  cache = os.path.join(work, 'features')
  tests = [f[:-5] for f in sorted(os.listdir(cache))
           if f.endswith('.json') and json.load(open(os.path.join(cache, f)))['split'] == 'test']
  assert len(tests) == 2  # one per set of weights
  a, b = (np.load(os.path.join(cache, f + '.npz'))['features'] for f in tests)
  assert not np.allclose(a, b)


def test_a_workdir_is_read_at_its_latest_checkpoint(built, pretrain_run, tmp_path):
  r = evaluate_lib.evaluate(_config(pretrain_run, built, tasks=('knn',)), str(tmp_path / 'eval'))
  assert r['checkpoint'] == pretrain_run
  assert r['checkpoint_read'] == os.path.join(os.path.abspath(pretrain_run), 'checkpoints', '2')


def _emotion_clips(informative: bool):
  """12 videos, 3 clips each: 8 train (the first 4 won, the last 4 lost), 4 test (won, lost, won, lost).
  Informative: a won video's clips show gesture 0 (feature direction 0), a lost one's gesture 1;
  otherwise every clip looks the same."""
  rng = np.random.default_rng(0)
  videos = [f'v{i}' for i in range(12)]
  won = dict(zip(videos, [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0]))
  feats, vid, emo, label = [], [], [], []
  for v in videos:
    for _ in range(3):
      g = 0 if won[v] else 1
      f = np.eye(4)[g] + 0.05 * rng.normal(size=4) if informative else np.ones(4)
      feats.append(f)
      vid.append(v)
      emo.append(won[v])
      label.append(g)
  clips = {'features': np.asarray(feats, np.float32), 'video_id': np.asarray(vid), 'emotion': np.asarray(emo),
           'label': np.asarray(label)}
  train = {k: v[:24] for k, v in clips.items()}  # the first 8 videos' clips: the recognition train split
  return clips, videos[:8], videos[8:], train


def test_emotion_on_known_answers():
  from mgjax.evals import emotion  # pylint: disable=g-import-not-at-top
  clips, train_v, test_v, mg_train = _emotion_clips(informative=True)
  r = emotion.evaluate(clips, train_v, test_v, mg_train, num_classes=4, steps=100)
  assert (r['train_videos'], r['test_videos']) == (8, 4)
  for how in ('from_features', 'from_gesture_histogram'):
    assert r[how] == {'accuracy': 1.0, 'f1': 1.0, 'count': 4}, (how, r[how])
  # Videos that all look alike: one prediction for every test video, so exactly half are right.
  clips, train_v, test_v, mg_train = _emotion_clips(informative=False)
  r = emotion.evaluate(clips, train_v, test_v, mg_train, num_classes=4, steps=100)
  for how in ('from_features', 'from_gesture_histogram'):
    assert r[how]['accuracy'] == 0.5 and r[how]['f1'] in (0.0, pytest.approx(2 / 3)), (how, r[how])
  # Videos the protocol names but the records lack are left out; no usable split is a skip.
  r = emotion.evaluate(clips, train_v + ['absent'], test_v, mg_train, num_classes=4, steps=100)
  assert r['train_videos'] == 8
  assert 'skipped' in emotion.evaluate(clips, ['absent'], test_v, mg_train, num_classes=4)


def _jpeg(value: int) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buf, format='JPEG', quality=95)
  return buf.getvalue()


def test_recognition_averages_the_softmax_of_its_views(tmp_path):
  """Three temporal views of a 12-frame segment whose frame i has brightness 20 i: the first view is dark,
  the other two are bright. The model says (3, 0) for a dark view and (0, 1) for a bright one (classes 0
  and 1; the other 30 never). The mean of the softmaxes picks class 1 (0.503 against 0.497); the mean of
  the logits, or the first view alone, would pick class 0."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  frames = [_jpeg(20 * i) for i in range(12)]
  meta = {'video_id': b'v', 'emotion': 0}
  source = [{'num_frames': 12, 'frames': frames, 'label': 1, 'subject_id': 5, **meta},
            {'num_frames': 12, 'frames': frames[:2] * 6, 'label': 0, 'subject_id': 6, **meta}]  # dark throughout
  rest = jnp.full(30, -1e9)

  def module(video):
    dark = (video[:, 0].astype(jnp.float32).mean((1, 2, 3)) < 50)[:, None]
    return jnp.where(dark, jnp.concatenate([jnp.array([3.0, 0.0]), rest]),
                     jnp.concatenate([jnp.array([0.0, 1.0]), rest]))

  clips = common.Clips({'test': source}, 32, frames=2, size=16, stride=1)
  ev = recognition.Evaluator(clips, {'logits': lambda params, video: module(video)}, test_clips=3, test_crops=1,
                             workdir=str(tmp_path))
  r = ev.evaluate(params=None)
  pred, label, subject = ev.predictions
  assert pred.tolist() == [1, 0] and label.tolist() == [1, 0] and subject.tolist() == [5, 6]
  assert r['top1'] == 1.0 and r['views'] == 3


def test_evaluate_a_fine_tuning_workdir_and_an_encoder_only_export(built, pretrain_run, finetune_run,
                                                                    tmp_path):
  r = evaluate_lib.evaluate(_config(finetune_run, built, tasks=('knn', 'recognition')), str(tmp_path / 'ft'))
  assert r['checkpoint_read'].startswith(os.path.join(os.path.abspath(finetune_run), 'checkpoints'))
  _check_classification(r['knn'])
  _check_classification(r['recognition'])
  assert r['recognition']['views'] == 6
  enc = str(tmp_path / 'encoder')
  weights.write(weights.load(pretrain_run), 'orbax', enc)
  r_enc = evaluate_lib.evaluate(_config(enc, built, tasks=('knn', 'recognition')), str(tmp_path / 'enc'))
  r_full = evaluate_lib.evaluate(_config(pretrain_run, built, tasks=('knn',)), str(tmp_path / 'full'))
  assert r_enc['knn'] == r_full['knn']  # the encoder alone gives the pretraining model's features
  assert r_enc['recognition'] == {'skipped': 'recognition needs a fine-tuned (classifier) checkpoint'}


def test_two_process_evaluate_writes_the_same_numbers(built, finetune_run, tmp_path):
  """`launch/local_multiprocess.sh 2 mgjax.evaluate`: the clips sharded over 2 processes (a block padded
  when a split does not divide), features and predictions gathered in the records' order: results.json
  and predictions.npz as from one process."""
  args = ['--config=configs/eval.py', f'--config.checkpoint={finetune_run}', f'--config.data_dir={built}',
          '--config.num_clips=1', '--config.evals.knn.k=5', '--config.evals.linear_probe.steps=50',
          '--config.evals.recognition.test_clips=2', '--config.evals.recognition.test_crops=3',
          '--config.evals.spotting.steps=50', '--config.evals.spotting.width=16',
          "--config.tasks=('knn','linear_probe','retrieval','emotion','recognition','spotting')"]
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  out = subprocess.run([sys.executable, '-m', 'mgjax.evaluate', *args, f'--workdir={one}'], cwd=helpers.REPO,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS='2')
  out = subprocess.run(['bash', 'launch/local_multiprocess.sh', '2', 'mgjax.evaluate', *args, f'--workdir={two}'],
                       cwd=helpers.REPO, capture_output=True, text=True, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '[0] ' in out.stderr and '[1] ' in out.stderr and 'process 1 of 2' in out.stderr
  a, b = (json.load(open(os.path.join(w, 'results.json'))) for w in (one, two))
  for task in set(common.TYPES) - {'attentive_probe'}:  # its clips are shared as every clip task's
    assert a[task] == b[task], task
  pa, pb = compare_lib.load(one), compare_lib.load(two)
  assert sorted(pa) == sorted(pb)
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k])
  assert len(pa['knn.pred']) == len(records.data_source(built, 'clips', 'test'))


# ---- The evaluation protocol's choices, each pinned by a case where the wrong choice answers otherwise ----

def test_knn_and_retrieval_compare_directions_not_lengths():
  """Features of different norms: the test clip points nearly along class 1's clip, but class 0's clip is
  ten times longer. Cosine similarity (the protocol, as DINO's kNN) picks class 1; a raw dot product would
  pick class 0 (10 against 2), in the vote and in the ranking."""
  train = {'features': np.array([[10.0, 0.0], [0.0, 1.0]], np.float32), 'label': np.array([0, 1])}
  test = {'features': np.array([[1.0, 2.0]], np.float32), 'label': np.array([1])}
  for k in (1, 2):
    assert knn.evaluate(train, test, num_classes=2, k=k)['top1'] == 1.0, k
  r = retrieval.evaluate(train, test, ks=(1,))
  assert r['recall@1'] == 1.0 and r['mAP'] == 1.0


def test_retrieval_counts_clips_of_the_same_class_as_relevant():
  """Relevant = the same micro-gesture class, whoever shows it: the query (subject 7, class 0) ranks a clip
  of its own subject but another class first, then class 0 by subject 8, then class 0 by subject 7. AP =
  (1/2 + 2/3) / 2; relevance by subject would give (1 + 2/3) / 2, by clip identity nothing."""
  gallery = {'features': np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5]], np.float32), 'label': np.array([1, 0, 0]),
             'subject_id': np.array([7, 8, 7])}
  query = {'features': np.array([[1.0, 0.0]], np.float32), 'label': np.array([0]), 'subject_id': np.array([7])}
  r = retrieval.evaluate(gallery, query, ks=(1, 2))
  assert r['recall@1'] == 0.0 and r['recall@2'] == 1.0
  assert r['mAP'] == pytest.approx((1 / 2 + 2 / 3) / 2)


def _leaky_subjects():
  """30 subjects x 4 clips. A subject's clips share an identity (a random 64-d direction, plus a little
  noise) and a gesture: class 0 for 20 subjects, class 1 for 10. Nothing in the features tells the
  gesture of a subject not seen: across subjects the best rule is 'always class 0' (2/3 right), which the
  strong penalty learns. Within a subject, the identity gives the gesture away."""
  rng = np.random.default_rng(0)
  subjects = np.repeat(np.arange(30), 4)
  identity = rng.normal(size=(30, 64))
  label = (rng.permutation(30) < 10).astype(np.int64)[subjects]
  x = (identity[subjects] + 0.1 * rng.normal(size=(120, 64))).astype(np.float32)
  return {'features': x, 'label': label, 'subject_id': subjects}


def test_linear_probe_cross_validation_holds_out_whole_subjects():
  """With folds of whole subjects, the weak penalty memorises identities that the held-out subjects do not
  share, so cross-validation prefers the strong one. Folds of clips leave each subject's other clips in
  training, the weak penalty looks nearly perfect, and it would be chosen."""
  train = _leaky_subjects()
  test = {'features': train['features'][:8], 'label': train['label'][:8]}
  r = linear_probe.evaluate(train, test, 2, steps=200, l2=(1e-4, 10.0), folds=3)
  assert r['l2'] == 10.0, r['cv_top1']
  assert r['cv_top1']['0.0001'] < 0.55 < r['cv_top1']['10.0'], r['cv_top1']  # 2/3: 'always class 0'
  # What folds of clips would have said: the leak the grouping exists to close.
  clip_folds = linear_probe.select_l2(train['features'], train['label'], np.arange(120), 2, (1e-4, 10.0),
                                      folds=3, steps=200)
  assert clip_folds[0] == 1e-4 and clip_folds[1]['0.0001'] > 0.95, clip_folds


def test_recognition_averages_every_crop_of_a_view():
  """One window of a 16 x 48 segment whose left third is dark, middle grey and right third bright: the
  three crops see one each. The model says (0.55, 0.45, 0) for a dark or bright crop and (0, 0.45, 0.55)
  for a grey one. Averaged over the three crops, class 1 (0.45) wins; the centre crop alone would say
  class 2, the left crop alone class 0."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  frame = np.zeros((16, 48, 3), np.uint8)
  frame[:, 16:32], frame[:, 32:] = 128, 255
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format='JPEG', quality=95)
  source = [{'num_frames': 4, 'frames': [buf.getvalue()] * 4, 'label': 1, 'subject_id': 5, 'video_id': b'v',
             'emotion': 0}]
  side, grey = jnp.log(jnp.array([0.55, 0.45, 1e-9])), jnp.log(jnp.array([1e-9, 0.45, 0.55]))
  rest = jnp.full(29, -1e9)

  def module(video):
    m = video.astype(jnp.float32).mean((1, 2, 3, 4))[:, None]
    return jnp.where((m > 64) & (m < 192), jnp.concatenate([grey, rest]), jnp.concatenate([side, rest]))

  clips = common.Clips({'test': source}, 32, frames=2, size=16, stride=1)
  probs = clips.per_clip('test', 1, 3, lambda v: recognition.softmax(np.asarray(module(v), np.float64)))[0]
  np.testing.assert_allclose(probs[0, :3], [0.55 * 2 / 3, 0.45, 0.55 / 3], atol=1e-6)
  ev = recognition.Evaluator(clips, {'logits': lambda params, video: module(video)}, test_clips=1, test_crops=3)
  r = ev.evaluate(params=None)
  assert ev.predictions[0].tolist() == [1] and r['top1'] == 1.0 and r['views'] == 3


def test_emotion_averages_the_clips_of_each_video():
  """Each video's clips, stored interleaved with other videos' clips: the first shows gesture 2, the same
  in every video, the other two the video's own (gesture 0 won, 1 lost). Grouped by video and averaged,
  every test video is right; the first clip alone makes all videos alike (half right), and clips grouped
  by their position in the records mix videos."""
  from mgjax.evals import emotion  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  videos = [f'v{i}' for i in range(12)]
  won = dict(zip(videos, [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0]))
  rows = []
  for v in videos:
    g = 0 if won[v] else 1
    rows.append((0, v, 2, np.eye(4)[2]))
    rows.extend((j, v, g, np.eye(4)[g] + 0.05 * rng.normal(size=4)) for j in (1, 2))
  rows.sort(key=lambda r: (r[0], r[1]))  # all first clips, then all second ones, ...: videos interleaved
  clips = {'features': np.array([r[3] for r in rows], np.float32), 'video_id': np.array([r[1] for r in rows]),
           'emotion': np.array([won[r[1]] for r in rows]), 'label': np.array([r[2] for r in rows])}
  mg_train = {k: v[np.isin(clips['video_id'], videos[:8])] for k, v in clips.items()}
  r = emotion.evaluate(clips, videos[:8], videos[8:], mg_train, num_classes=4, steps=100)
  for how in ('from_features', 'from_gesture_histogram'):
    assert r[how] == {'accuracy': 1.0, 'f1': 1.0, 'count': 4}, (how, r[how])


def test_attentive_probe_finds_the_one_token_that_carries_the_class():
  """Each clip: 32 tokens of noise, one of which (anywhere) also carries its class's direction. Mean pooling
  dilutes that token 32 times; cross-attention can pick it out."""
  rng = np.random.default_rng(0)
  dim, classes, n_tokens = 32, 4, 32
  directions = rng.normal(size=(classes, dim)) * 2.0

  def make(n):
    y = rng.integers(0, classes, n)
    t = rng.normal(size=(n, n_tokens, dim)).astype(np.float32)
    marked = rng.integers(0, n_tokens, n)
    t[np.arange(n), marked] += directions[y] + 4.0  # the carrying token also stands out by its mean
    return {'tokens': t, 'label': y, 'subject_id': np.arange(n) % 6}

  train, test = make(600), make(200)
  r = attentive_probe.evaluate(train, test, classes, wd=(1e-2,), steps=300, lr=3e-3, heads=4)
  mean = {s: {'features': d['tokens'].mean(1), 'label': d['label']} for s, d in (('train', train), ('test', test))}
  lp = linear_probe.evaluate(mean['train'], mean['test'], classes, steps=300)
  assert r['top1'] > 0.9 and r['top1'] > lp['top1'] + 0.2, (r['top1'], lp['top1'])
