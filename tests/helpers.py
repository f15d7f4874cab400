"""Helpers for tests: small sample data, builds, record comparison, watching a training run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from mgjax import files
from mgjax.train import metrics as metrics_lib
from tfds_imigue3k import sample as sample_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLE_ARGS = dict(subjects=4, videos_per_subject=2, unlabelled=1, frames=240, width=160, height=96,
                   cut_prob=0.5, static_prob=0.5, seed=3)


def make_sample(manual_dir: str) -> dict:
  truth = sample_lib.generate(manual_dir, **SAMPLE_ARGS)
  videos = truth['videos'].values()
  assert any(v['cuts'] for v in videos) and any(v['static'][1] for v in videos), 'seed lacks a cut or intro'
  return truth


def build(manual_dir: str, data_dir: str, config, **builder_kwargs):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_imigue3k import imigue3k_dataset_builder as b  # pylint: disable=g-import-not-at-top
  builder = b.Builder(config=config, data_dir=data_dir, **builder_kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
                               file_format='array_record')
  return builder


def assert_same_records(a, b):
  """Two data sources hold the same examples in the same order."""
  assert len(a) == len(b)
  for i in range(len(a)):
    ra, rb = a[i], b[i]
    assert ra.keys() == rb.keys()
    for k in ra:
      if k == 'frames':
        assert list(ra[k]) == list(rb[k]), (i, k)
      else:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=f'record {i} feature {k}')


def write_video(path: str, num_frames: int, width: int = 64, height: int = 48, seed: int = 0, **kw):
  """A small real video: a moving bright square on a textured background, FFmpeg-encoded."""
  rng = np.random.default_rng(seed)
  bg = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)

  def frames():
    for i in range(num_frames):
      f = bg.copy()
      x = (i * 3) % (width - 8)
      f[height // 3:height // 3 + 8, x:x + 8] = 255
      yield f

  sample_lib._write_video(path, frames(), width, height, **kw)  # pylint: disable=protected-access


def decode_all(path: str, width=None, height=None) -> np.ndarray:
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path) as c:
    return np.stack([f.to_ndarray(format='rgb24', width=width, height=height, interpolation='AREA')
                     for f in c.decode(video=0)])


def assert_frames_match(got: np.ndarray, video: np.ndarray, indices, tol: float = 6.0):
  """got[j] is video[indices[j]] up to JPEG error (q90 on small frames of sharp-edged drawings: a few
  levels on average), and each is closer to it than to its neighbours."""
  got, video = got.astype(np.float32), video.astype(np.float32)
  indices = np.asarray(indices)
  err = np.abs(got - video[indices]).mean()
  assert err < tol, f'mean abs error {err:.2f} >= {tol}'
  for j, i in enumerate(indices):
    cands = [k for k in range(i - 2, i + 3) if 0 <= k < len(video)]
    best = cands[int(np.argmin([np.abs(got[j] - video[k]).mean() for k in cands]))]
    assert best == i, f'frame {j} looks like source frame {best}, expected {i}'


def losses(workdir):
  """Per-step loss; a step run twice (before a kill, after the resume) keeps its last value."""
  out = {}
  for r in metrics_lib.read_jsonl(files.path(workdir) / 'metrics.jsonl'):
    if 'loss' in r:
      out[r['step']] = r['loss']
  return out


def wait_for_step(workdir, proc, step, timeout=240):
  """Waits until a running training process has logged `step`."""
  path = files.path(workdir) / 'metrics.jsonl'  # in a bucket, written at each checkpoint
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert proc.poll() is None, 'run ended before it could be interrupted'
    if path.exists() and any(s >= step for s in losses(workdir)):
      return
    time.sleep(0.02 if not files.is_remote(path) else 0.5)
  raise TimeoutError(f'step {step} not reached')


def checkpoints(workdir):
  """The steps of a workdir's saved checkpoints, ascending."""
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (for a multi-process run's coordinator)."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def finetune_cmd(built, init, workdir, steps, *extra):
  """mgjax.finetune of the tiny T model on the built sample, with the full VideoMAE augmentation (which
  configs/finetune_demo.py turns off for its 64-pixel clips)."""
  return [sys.executable, '-m', 'mgjax.finetune', '--config=configs/finetune_demo.py',
          f'--config.init={init}', f'--workdir={workdir}', f'--config.data.data_dir={built}', '--config.model.size=T',
          '--config.model.frames=4', '--config.model.image_size=32', '--config.global_batch=8',
          '--config.data.workers=0', f'--config.total_steps={steps}', '--config.checkpoint.every_steps=3',
          '--config.eval_every=3', '--config.eval.limit=8', '--config.log_every=1',
          '--config.augment.mixup=0.8', '--config.augment.cutmix=1.0', '--config.data.randaug_n=2',
          '--config.data.erase_prob=0.25', '--config.data.crop_scale=(0.08,1.0)', *extra]


def wait_for_checkpoint(workdir, proc, step, timeout=240):
  """Waits until a running training process has a finished checkpoint at `step` or later."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert proc.poll() is None, 'run ended before it could be interrupted'
    if checkpoints(workdir) and checkpoints(workdir)[-1] >= step:
      return
    time.sleep(0.02)
  raise TimeoutError(f'no checkpoint at step {step} or later')


def interrupt(cmd, workdir, at_step, sig, timeout=240, checkpoint=None, env=None):
  """Starts a training command (in `env`, if given), waits until it has logged `at_step` (and, if given,
  has finished a checkpoint at step `checkpoint` or later), sends `sig`; returns (exit status, stderr)."""
  with tempfile.TemporaryFile('w+') as err:
    # its own process group, so that its grain workers, which outlive a SIGKILLed parent, go with it
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True,
                            start_new_session=True, env=env)
    try:
      wait_for_step(workdir, proc, at_step, timeout)
      if checkpoint is not None:
        wait_for_checkpoint(workdir, proc, checkpoint, timeout)
    finally:
      proc.send_signal(sig)
      try:
        proc.wait(timeout=120)
      except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    err.seek(0)
    return proc.returncode, err.read()


def recorded_losses(run: str) -> list:
  """The recorded per-step losses of a reference run ('pretrain' or 'finetune'), tests/data."""
  with open(os.path.join(REPO, 'tests', 'data', 'recorded_losses.json')) as f:
    return json.load(f)[run]


# ---- Two programs that sum the same terms in different orders ---------------------------------------------
# Sharded, accumulated, rematerialised and multi-process steps compute what the plain step computes, but in
# another order of summation (other reduction trees; on each processor, other vector widths and FMA
# contraction in XLA's CPU code), so their float32 results agree up to rounding only. The tolerances follow
# from float32's unit roundoff u = 2^-24 (6e-8), not from what one processor happened to give:
# - A sum of n terms, in whatever tree or blocked order, is within about log2(n) u sum|terms| of the exact
#   sum; the largest reductions of the tests' steps have n < 2^20 terms, so within 20 u = 1.2e-6 of the sum
#   of the terms' magnitudes.
# - A loss is a mean of terms of one sign (squared errors, cross-entropies): within 20 u of itself.
#   LOSS_RTOL leaves a factor 8 for the rounding that the parameters carry into the later steps' losses.
#   This holds for AdamW runs too: AdamW may move a weight whose gradient is rounding noise by up to 2 lr
#   in either direction, but that weight's effect on the loss is its gradient times its move, itself at
#   the rounding level.
# - A gradient leaf is a sum of terms of both signs. Normwise over the leaf, with cancellation
#   (sum|terms| / |sum|) up to 10 at each of the few reductions chained between the loss and a weight,
#   it is within about 4 x 10 x 20 u = 1e-4 of itself; GRAD_RTOL leaves a factor 10 above that. Element by
#   element there is no such bound: a gradient that is zero in exact arithmetic is rounding noise of either
#   sign, which is why parameters of AdamW steps are not compared (its first updates are lr * sign(g)).
# - A forward pass in two frameworks (transformers in PyTorch against mgjax in XLA): each matmul of the tiny
#   test models sums at most 1536 terms (the patch embedding: 11 u relative to the terms' magnitudes), and
#   the dozen layers between input and output, with their norms and softmaxes, amplify that by tens at
#   most: activations of size up to 10 agree to within about 10 x 30 x 11 u = 2e-5. FORWARD_ATOL and
#   FORWARD_RTOL leave a factor 10.
# - A formula written once in numpy and once in JAX (targets, norms, GELU), a few hundred terms: within
#   about 10 u = 6e-7 relative; the tests allow 1e-5 relative, or 1e-6 absolute on values of order 1.
# The bugs these comparisons catch move a gradient by a large part of itself (micro-batch gradients summed
# instead of averaged: x m; mixup pairs drawn inside a micro-batch: other targets; drop path lost).
# Equality that must be exact (a resumed run on the same machine and program) is compared exactly.
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-3
FORWARD_ATOL, FORWARD_RTOL = 2e-4, 1e-4


def normwise_error(got, want) -> float:
  """||got - want|| / ||want|| (want non-zero) of two arrays, in float64."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def assert_close_normwise(got: dict, want: dict, rtol: float, what: str):
  """Every leaf of two parameter-shaped trees (flat dicts or nested) within rtol normwise."""
  from mgjax.models import convert  # pylint: disable=g-import-not-at-top
  fg, fw = convert.flatten(got), convert.flatten(want)
  assert fg.keys() == fw.keys(), what
  for k in fw:
    if np.any(fw[k]):
      err = normwise_error(fg[k], fw[k])
      assert err <= rtol, f'{what}: {k} differs by {err:.3g} of its norm (> {rtol})'
    else:
      np.testing.assert_array_equal(fg[k], fw[k], err_msg=f'{what}: {k}')

