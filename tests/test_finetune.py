"""Fine-tuning: from a real pretraining run, resume (bit-exact after SIGTERM, SIGKILL and a change of worker
count), the non-finite stop, semi-supervised subsets, mixing proportions, augmentation invariants, layer-wise
lr decay, and errors for weights of another size or a label fraction out of range."""

import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from transformers import VideoMAEForVideoClassification

from mgjax import weights
from mgjax.data import finetune as data_lib
from mgjax.data import records
from mgjax.models import convert, functional, videomae
from mgjax.train import finetune as ft
from mgjax.train import metrics as metrics_lib
from mgjax.train import optim
from tests import helpers


_cmd = helpers.finetune_cmd


def _evals(workdir):
  return {r['step']: r['eval/test/top1'] for r in metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if 'eval/test/top1' in r}


def test_finetune_from_pretraining_resumes_and_exports(built, pretrain_run, finetune_run, tmp_path):
  run = finetune_run  # 6 steps from pretrain_run, label_fraction 0.3
  subset = json.load(open(os.path.join(run, 'labelled_subset.json')))
  labels = data_lib.read_labels(built, 'clips', 'train', records.data_source(built, 'clips', 'train'))
  assert set(subset['classes']) == set(labels.tolist())  # every class keeps at least one clip
  assert len(subset['indices']) < len(labels)
  steps = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(run, 'metrics.jsonl')) if 'loss' in r]
  assert steps == list(range(1, 7))
  assert sorted(_evals(run)) == [3, 6]
  read = os.path.join(os.path.abspath(pretrain_run), 'checkpoints', '2')  # the workdir's latest, pinned
  assert json.load(open(os.path.join(run, 'run_info.json')))['init_read'] == read
  # The same command with a longer budget resumes from the last checkpoint.
  out = subprocess.run(_cmd(built, pretrain_run, run, 8, '--config.label_fraction=0.3'), cwd=helpers.REPO,
                       capture_output=True, text=True)
  assert out.returncode == 0 and 'Resumed from step 6' in out.stderr, out.stderr[-3000:]
  assert f'Fine-tuning T from {pretrain_run}' in out.stderr and 'test/top1' in out.stderr
  assert json.load(open(os.path.join(run, 'run_info.json')))['init_read'] == read  # kept on resume
  # A fine-tuned checkpoint exports to VideoMAEForVideoClassification.
  w = weights.load(run)
  assert w.num_classes == 32
  hf_dir = str(tmp_path / 'hf')
  weights.write(w, 'hf', hf_dir)
  model, info = VideoMAEForVideoClassification.from_pretrained(hf_dir, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys']
  assert model.config.num_labels == 32


def test_sigterm_sigkill_and_other_worker_counts_resume_exactly(built, pretrain_run, tmp_path):
  """One interrupted run against one uninterrupted reference: SIGTERM (saves and exits 0), a restart
  with 2 grain workers where the saved input state has none (the input continues at the saved batch),
  SIGKILL, a restart restoring the 2-worker input state. Everything random in fine-tuning is on: mixup /
  cutmix, RandAugment, erasing, drop path, the labelled subset, the class-balanced sampler, evaluations."""
  steps, extra = 16, ('--config.label_fraction=0.5', '--config.data.class_balanced=True',
                      '--config.model.drop_path=0.1', '--config.checkpoint.every_steps=4', '--config.eval_every=8')
  ref = str(tmp_path / 'ref')
  out = subprocess.run(_cmd(built, pretrain_run, ref, steps, *extra), cwd=helpers.REPO, capture_output=True,
                       text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  want = helpers.losses(ref)
  assert sorted(want) == list(range(1, steps + 1)) and sorted(_evals(ref)) == [8, 16]
  # As recorded: what the code computes has not changed (another processor: helpers.LOSS_RTOL).
  np.testing.assert_allclose([want[s] for s in range(1, steps + 1)], helpers.recorded_losses('finetune'),
                             rtol=helpers.LOSS_RTOL)
  run = str(tmp_path / 'interrupted')
  status, err = helpers.interrupt(_cmd(built, pretrain_run, run, steps, *extra), run, 5, signal.SIGTERM)
  assert status == 0, err[-3000:]
  termed = max(helpers.losses(run))
  assert termed < steps and helpers.checkpoints(run)[-1] == termed  # saved where it stopped
  workers = ('--config.data.workers=2',)
  status, err = helpers.interrupt(_cmd(built, pretrain_run, run, steps, *extra, *workers), run, termed + 2,
                                  signal.SIGKILL, checkpoint=termed + 1)
  assert f'Resumed from step {termed}' in err and 'does not fit this run' in err, err[-3000:]
  assert max(helpers.losses(run)) < steps
  out = subprocess.run(_cmd(built, pretrain_run, run, steps, *extra, *workers), cwd=helpers.REPO,
                       capture_output=True, text=True)
  assert out.returncode == 0 and 'Resumed from step' in out.stderr, out.stderr[-3000:]
  assert 'does not fit this run' not in out.stderr  # the 2-worker input state restored
  assert helpers.losses(run) == want  # bit-exact, every step
  assert _evals(run) == _evals(ref)


def test_non_finite_loss_stops_at_the_last_good_checkpoint(built, tmp_path):
  run = str(tmp_path / 'ft')
  out = subprocess.run(_cmd(built, '', run, 30, '--config.optim.base_lr=1e12', '--config.eval_every=0',
                            '--config.checkpoint.every_steps=1'), cwd=helpers.REPO, capture_output=True,
                       text=True)
  assert out.returncode != 0
  assert 'non-finite loss' in out.stderr, out.stderr[-3000:]
  bad = int(re.search(r'non-finite loss .* at step (\d+);', out.stderr).group(1))
  assert bad > 1 and helpers.checkpoints(run)[-1] == bad - 1, (bad, helpers.checkpoints(run))
  assert f'(step {bad - 1}) was saved' in out.stderr
  assert max(helpers.losses(run)) == bad - 1


def test_two_processes_over_localhost_match_one_process(built, pretrain_run, tmp_path):
  """Real multi-process JAX (2 processes x 4 CPU devices, gloo, started by launch/local_multiprocess.sh),
  starting from a checkpoint that an 8-device run saved: every process reads it whatever devices it has.
  In 2 micro-batches, with mixup, cutmix and drop path on: the same clips are paired and each micro-batch
  holds the same clips as on one process. The single-view evaluation during training gives the same numbers."""
  steps, extra = 4, ('--config.eval_every=4', '--config.label_fraction=0.5', '--config.micro_batches=2',
                    '--config.mesh=(4,1,2)')
  ref = str(tmp_path / 'one')
  out = subprocess.run(_cmd(built, pretrain_run, ref, steps, *extra), cwd=helpers.REPO, capture_output=True,
                       text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  run = str(tmp_path / 'two')
  cmd = _cmd(built, pretrain_run, run, steps, *extra)
  assert cmd[1:3] == ['-m', 'mgjax.finetune']
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS='4')
  out = subprocess.run(['bash', 'launch/local_multiprocess.sh', '2', 'mgjax.finetune', *cmd[3:]], cwd=helpers.REPO,
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and '[1] ' in out.stderr and 'process 1 of 2' in out.stderr, out.stderr[-3000:]
  want, got = helpers.losses(ref), helpers.losses(run)
  assert sorted(got) == list(range(1, steps + 1))
  # Collectives over two processes sum in another order: helpers.LOSS_RTOL.
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=helpers.LOSS_RTOL)
  top1 = lambda w: [r['eval/test/top1'] for r in metrics_lib.read_jsonl(os.path.join(w, 'metrics.jsonl'))
                    if 'eval/test/top1' in r]
  assert top1(run) == top1(ref) and len(top1(ref)) == 1
  read = os.path.join(os.path.abspath(pretrain_run), 'checkpoints', '2')  # the step process 0 pinned
  assert json.load(open(os.path.join(run, 'run_info.json')))['init_read'] == read


@pytest.mark.parametrize('fraction', [0.0, -0.5, 1.5])
def test_label_fraction_outside_0_1_is_a_config_error(fraction, tmp_path):
  config = __import__('configs.finetune_demo', fromlist=['get_config']).get_config()
  config.label_fraction = fraction
  config.data.data_dir = str(tmp_path / 'no_records')  # were the fraction taken, this would fail later
  with pytest.raises(ValueError, match=rf'config.label_fraction={fraction}: .* must be in \(0, 1\]'):
    ft.train_and_evaluate(config, str(tmp_path / 'ft'))
  assert not os.path.exists(tmp_path / 'ft')  # nothing written


def test_bad_crop_scale_is_a_config_error(built, tmp_path):
  out = subprocess.run(_cmd(built, '', str(tmp_path / 'ft'), 2, '--config.data.crop_scale=(0.5,1.5)'),
                       cwd=helpers.REPO, capture_output=True, text=True)
  assert out.returncode != 0 and 'config.data.crop_scale' in out.stderr
  assert not os.path.exists(os.path.join(tmp_path, 'ft', 'checkpoints'))


def test_init_takes_the_encoder_and_keeps_the_new_head(pretrain_run):
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32, dtype='float32')
  fns = functional.ModelFns.create(cfg, 32, 0.001)
  fresh = fns.init(0)
  params = ft.init_from_pretrained(fresh, pretrain_run, cfg)
  pre = weights.load(pretrain_run).params['encoder']
  np.testing.assert_array_equal(params['encoder']['blocks'][1]['mlp']['fc2']['kernel'],
                                pre['blocks'][1]['mlp']['fc2']['kernel'])
  np.testing.assert_array_equal(params['head']['kernel'], fresh['head']['kernel'])
  assert 'norm' not in params['encoder']
  assert float(np.abs(np.asarray(fresh['head']['kernel'])).max()) < 1e-3  # head init scaled by 0.001


def test_weights_of_another_size_are_refused(pretrain_run):
  cfg = videomae.ModelConfig(size='XS', frames=4, image_size=32, dtype='float32')
  fns = functional.ModelFns.create(cfg, 32, 0.001)
  with pytest.raises(convert.WeightsError, match=r'a T model .* cannot initialise the XS config'):
    ft.init_from_pretrained(fns.init(0), pretrain_run, cfg)


def test_layer_decay_scales():
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32)
  params = jax.eval_shape(lambda: functional.ModelFns.create(cfg, 32, 0.001).init(0))
  s = convert.flatten(optim.layer_scales(params, depth=2, decay=0.5))
  assert s['encoder/patch_embed/kernel'] == 0.125 and s['encoder/blocks/0/attn/qkv/kernel'] == 0.25
  assert s['encoder/blocks/1/mlp/fc1/bias'] == 0.5 and s['head/kernel'] == 1.0 and s['fc_norm/scale'] == 1.0


def test_mixup_cutmix_targets():
  video = np.random.default_rng(0).integers(0, 256, (4, 2, 8, 8, 3), dtype=np.uint8)
  labels = np.array([0, 1, 2, 3])
  for seed in range(6):
    x, t = data_lib.mix(video, labels, jax.random.key(seed), 5, mixup=0.8, cutmix=1.0, smoothing=0.1)
    t = np.asarray(t)
    np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-6)
    assert x.shape == video.shape and (t.max(1) < 0.92 + 1e-6).all()  # smoothed: never a hard 1
  _, t = data_lib.mix(video, labels, jax.random.key(0), 5, mixup=0.0, cutmix=0.0, smoothing=0.1)
  np.testing.assert_allclose(np.asarray(t)[0], [0.92, 0.02, 0.02, 0.02, 0.02], atol=1e-6)


def _two_valued_batch():
  """4 clips of 2 frames, 16 x 20 pixels; clip i is the constant 10 + 50 i, its label i."""
  values = 10.0 + 50.0 * np.arange(4)
  video = np.broadcast_to(values[:, None, None, None, None], (4, 2, 16, 20, 3)).astype(np.uint8)
  return video, values, np.arange(4)


@pytest.mark.parametrize('mixup,cutmix', [(0.0, 1.0), (0.8, 0.0), (0.8, 1.0)])
def test_mixed_pixels_and_labels_share_the_same_proportion(mixup, cutmix):
  """Clip i is mixed with clip 3 - i (the batch reversed): the share of its pixels that come from the
  other clip (cutmix: the pasted box's area; mixup: the blend weight) equals the other label's weight."""
  video, values, labels = _two_valued_batch()
  kinds = set()
  for seed in range(12):
    x, t = data_lib.mix(video, labels, jax.random.key(seed), 4, mixup=mixup, cutmix=cutmix, smoothing=0.0)
    x, t = np.asarray(x), np.asarray(t)
    np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-6)
    for i in range(4):
      own, other = values[i], values[3 - i]
      from_other = (x[i] == other).mean() if np.isin(x[i], [own, other]).all() else None
      if from_other is not None:  # cutmix (or a blend weight of exactly 0 or 1)
        kinds.add('cut')
        assert t[i, labels[3 - i]] == pytest.approx(from_other, abs=1e-6), (seed, i)
      else:  # mixup: x = lam * own + (1 - lam) * other, the same everywhere
        kinds.add('mix')
        share = (own - x[i]) / (own - other)  # pixels up to 160 (float32: 1e-5) over 50: within 2e-7
        np.testing.assert_allclose(share, share.flat[0], atol=1e-5)
        assert t[i, labels[3 - i]] == pytest.approx(share.flat[0], abs=1e-5), (seed, i)
  assert kinds == ({'cut'} if not mixup else {'mix'} if not cutmix else {'cut', 'mix'})


def test_augmentation_is_the_same_for_every_frame():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  clip = np.stack([frame] * 4)
  for seed in range(5):
    out = data_lib.rand_augment(clip, 4, 7, np.random.default_rng(seed))
    assert all(np.array_equal(out[0], f) for f in out[1:])
    erased = data_lib.random_erase(clip, 1.0, np.random.default_rng(seed))
    assert all(np.array_equal(erased[0], f) for f in erased[1:]) and not np.array_equal(erased, clip)


def test_labelled_subset_and_class_balanced_sampling():
  labels = np.array([0] * 90 + [1] * 9 + [2])
  sub = data_lib.labelled_subset(labels, 0.1, seed=0)
  assert sorted(set(labels[sub].tolist())) == [0, 1, 2] and len(sub) == 9 + 1 + 1
  assert np.array_equal(sub, data_lib.labelled_subset(labels, 0.1, seed=0))
  cfg = data_lib.FinetuneInputConfig(class_balanced=True)
  aug = data_lib.ClipAugmenter(None, np.arange(100), labels, cfg)
  drawn = np.bincount(labels[[aug.record_index(g) for g in range(3000)]], minlength=3) / 3000
  assert np.all(np.abs(drawn - 1 / 3) < 0.05), drawn
  plain = data_lib.ClipAugmenter(None, np.arange(100), labels, data_lib.FinetuneInputConfig())
  assert sorted(plain.record_index(g) for g in range(100)) == list(range(100))  # an epoch: a permutation
