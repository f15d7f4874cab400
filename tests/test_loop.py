"""The pretraining binary end to end: exact resume after SIGTERM, SIGKILL and a change of worker or process
count, the non-finite stop at the last good checkpoint, other meshes with micro-batches and remat.

Each test runs `python -m mgjax.main` in a subprocess on the sample records (8 fake CPU devices).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from mgjax.train import metrics as metrics_lib
from tests import helpers

REPO = helpers.REPO


def _cmd(built, workdir, steps, *extra):
  return [sys.executable, '-m', 'mgjax.main', '--config=configs/demo.py', f'--workdir={workdir}',
          f'--config.data.data_dir={built}', '--config.data.split=all', '--config.model.frames=4',
          '--config.model.image_size=32', '--config.global_batch=8', '--config.data.num_repeats=2',
          '--config.data.workers=0', f'--config.total_steps={steps}', '--config.checkpoint.every_steps=4',
          '--config.log_every=1', '--config.viz_every=0', '--config.optim.warmup_steps=2',
          '--config.eval_every=0', *extra]


EVAL = ('--config.eval_every=5', '--config.eval.limit=12', '--config.viz_every=5')  # kNN, pictures at step 5
# Gradient accumulation with drop path, whose keys are folded by micro-batch index: the same losses need
# the same clips in each micro-batch.
MICRO = ('--config.micro_batches=2', '--config.model.drop_path=0.1')  # 4 clips a micro-batch
DATA_TENSOR = '--config.mesh=(4,1,2)'  # the batch over 4 devices


def _evals(workdir):
  return {r['step']: {k: v for k, v in r.items() if k.startswith('eval/')}
          for r in metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl')) if 'eval/knn/top1' in r}


def _run(cmd, **kw):
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **kw)


@pytest.fixture(scope='module')
def reference(built, tmp_path_factory):
  """An uninterrupted 40-step run (its workdir): the losses every interrupted run must reproduce."""
  ref = str(tmp_path_factory.mktemp('reference'))
  out = _run(_cmd(built, ref, 40))
  assert out.returncode == 0, out.stderr[-3000:]
  want = helpers.losses(ref)
  assert sorted(want) == list(range(1, 41))
  assert np.mean([want[s] for s in range(31, 41)]) < np.mean([want[s] for s in range(1, 11)])
  # The losses as recorded: what the code computes has not changed. Another processor sums in another
  # order: helpers.LOSS_RTOL.
  np.testing.assert_allclose([want[s] for s in range(1, 41)], helpers.recorded_losses('pretrain'),
                             rtol=helpers.LOSS_RTOL)
  return ref


def test_sigterm_sigkill_and_other_worker_counts_resume_exactly(built, reference, tmp_path):
  """One run, interrupted three ways, gives the reference's loss at every step, bit for bit: SIGTERM with
  2 grain workers (saves where it stopped, exits 0), a restart restoring the 2-worker input state, SIGKILL,
  and a restart with no workers, whose saved input state does not fit (the input continues at the saved
  batch)."""
  run = str(tmp_path / 'run')
  workers = ('--config.data.workers=2',)
  status, err = helpers.interrupt(_cmd(built, run, 40, *workers), run, 6, signal.SIGTERM)
  assert status == 0 and 'after SIGTERM' in err, err[-3000:]
  termed = max(helpers.losses(run))
  assert termed < 40 and helpers.checkpoints(run)[-1] == termed  # saved at the step it stopped
  status, err = helpers.interrupt(_cmd(built, run, 40, *workers), run, termed + 2, signal.SIGKILL,
                                  checkpoint=termed + 1)
  assert f'Resumed from step {termed}' in err and 'does not fit this run' not in err, err[-3000:]
  assert max(helpers.losses(run)) < 40
  out = _run(_cmd(built, run, 40))  # same command, same workdir, no workers: resumes by itself
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Resumed from step' in out.stderr and 'does not fit this run' in out.stderr
  assert helpers.losses(run) == helpers.losses(reference)  # bit-exact, every step
  assert helpers.checkpoints(run)[-1] == 40


def test_non_finite_loss_stops_at_the_last_good_checkpoint(built, tmp_path):
  run = str(tmp_path / 'run')
  out = _run(_cmd(built, run, 40, '--config.optim.base_lr=1e12', '--config.checkpoint.every_steps=1'))
  assert out.returncode != 0
  assert 'non-finite loss' in out.stderr, out.stderr[-3000:]
  # Metrics are read one step late, but always before a checkpoint: every step until the bad one is saved,
  # none at or past it.
  bad = int(re.search(r'non-finite loss .* at step (\d+);', out.stderr).group(1))
  assert bad > 1 and helpers.checkpoints(run)[-1] == bad - 1, (bad, helpers.checkpoints(run))
  assert max(helpers.losses(run)) == bad - 1
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  restored = ocp.StandardCheckpointer().restore(os.path.join(run, 'checkpoints', str(bad - 1), 'state'))
  assert int(restored['step']) == bad - 1
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored))


def test_run_writes_what_users_look_at(built, tmp_path):
  run = str(tmp_path / 'run')
  out = _run(_cmd(built, run, 6, '--config.viz_every=3', '--config.log_every=3'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'step 6/6  loss' in out.stderr and 'clips/s  ETA' in out.stderr
  assert 'Memory per device: param_bytes_per_device' in out.stderr
  mem = json.load(open(os.path.join(run, 'memory.json')))
  assert mem['param_bytes_per_device'] > 0 and mem['activation_temp_bytes'] > 0
  info = json.load(open(os.path.join(run, 'run_info.json')))
  assert len(info['git_revision']) >= 40 and info['devices'] == 8
  assert json.load(open(os.path.join(run, 'config.json')))['global_batch'] == 8
  assert sorted(os.listdir(os.path.join(run, 'reconstructions'))) == ['step_0000003.png', 'step_0000006.png']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(os.path.join(run, 'tensorboard')))


def test_misspelt_config_key_is_an_error_naming_it(built, tmp_path):
  out = _run(_cmd(built, str(tmp_path / 'run'), 2, '--config.optim.base_lrr=1.0'))
  assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert ("--config.optim.base_lrr=1.0: config.optim has no field 'base_lrr' (did you mean config.optim.base_lr?)"
          in out.stderr), out.stderr[-3000:]
  # The other binaries parse their flags the same way; a config file that is not there is named too.
  out = _run([sys.executable, '-m', 'mgjax.evaluate', '--config=configs/eval.py', '--config.evals.knn.kk=3',
              f'--workdir={tmp_path / "eval"}'])
  assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert "config.evals.knn has no field 'kk' (did you mean config.evals.knn.k?)" in out.stderr, out.stderr[-3000:]
  out = _run([sys.executable, '-m', 'mgjax.finetune', '--config=configs/finetune_dmeo.py', f'--workdir={tmp_path}'])
  assert out.returncode != 0 and '--config=configs/finetune_dmeo.py: no such config file' in out.stderr
  assert not os.listdir(tmp_path)  # nothing written


def test_unknown_override_names_what_is_wrong():
  from mgjax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.pretrain_base('S')
  assert config_lib.unknown_override(['m', '--config.optim.base_lr=1', '--config.seed=2'], cfg) is None
  assert config_lib.unknown_override(['m', '--config.seed.x=1'], cfg) == (
      '--config.seed.x=1: config.seed is a value (int), not a group of fields')
  assert config_lib.unknown_override(['m', '--config.zzz=1'], cfg).startswith(
      "--config.zzz=1: config has no field 'zzz'. Its fields: ")


def test_decoder_depth_of_every_config_can_be_set_on_the_command_line():
  # Left as None (the size's depth), the field must still take an int override: an untyped None could not.
  names = ('vmae_s', 'vmae_b', 'vmae_l', 'vmae_h', 'finetune_s', 'finetune_b', 'finetune_l', 'demo',
           'demo_s112')
  prog = ('import sys; from absl import app, flags; from ml_collections import config_flags\n'
          f'names = {names!r}\n'
          'for i in range(len(names)): config_flags.DEFINE_config_file(f"c{i}", lock_config=True)\n'
          'depths = lambda: [flags.FLAGS[f"c{i}"].value.model.decoder_depth for i in range(len(names))]\n'
          'app.run(lambda _: print(depths()))')
  for extra, want in (('', [None] * 7 + [2, 2]), ('.model.decoder_depth=4', [4] * 9)):
    args = [f'--c{i}=configs/{n}.py' for i, n in enumerate(names)]
    args += [f'--c{i}{extra}' for i in range(len(names))] if extra else []
    out = _run([sys.executable, '-c', prog, *args])
    assert out.returncode == 0 and out.stdout.strip() == str(want), (extra, out.stdout, out.stderr[-500:])


@pytest.fixture(scope='module')
def short_run(built, tmp_path_factory):
  """A 5-step run on one process over 8 devices (4 data x 2 tensor), in 2 micro-batches with drop path, with
  the kNN at step 5."""
  run = str(tmp_path_factory.mktemp('short'))
  out = _run(_cmd(built, run, 5, *EVAL, *MICRO, DATA_TENSOR))
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'step 5: knn/top1' in out.stderr
  return run


def test_pretraining_logs_the_frozen_feature_knn_every_eval_every(short_run):
  evals = _evals(short_run)
  assert list(evals) == [5]
  e = evals[5]
  assert set(e) >= {'eval/knn/top1', 'eval/knn/top5', 'eval/knn/mean_class_accuracy'}
  assert 0 <= e['eval/knn/top1'] <= e['eval/knn/top5'] <= 1
  assert 'eval/knn/temperature' not in e  # settings are not measurements
  events = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(short_run, 'tensorboard')) for f in fs]
  assert any(b'eval/knn/top1' in open(f, 'rb').read() for f in events)


def test_fsdp_tensor_mesh_and_remat_match_the_short_run(built, short_run, tmp_path):
  run = str(tmp_path / 'run')
  out = _run(_cmd(built, run, 5, *MICRO, '--config.mesh=(2,2,2)', '--config.model.remat=dots'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in out.stderr
  want, got = helpers.losses(short_run), helpers.losses(run)
  assert sorted(got) == list(range(1, 6))
  # Another mesh, micro-batches and remat sum in other orders: helpers.LOSS_RTOL.
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=helpers.LOSS_RTOL)


class _Two:
  """A run of 2 processes x 4 CPU devices over 127.0.0.1 (gloo): one 8-device mesh. stderr to files."""

  def __init__(self, cmd, tmp_path, name):
    port = helpers.free_port()
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
    self.errs = [open(tmp_path / f'{name}.{i}.err', 'w+') for i in range(2)]
    self.procs = [subprocess.Popen(cmd + [f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
                                         f'--process_id={i}'], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=self.errs[i], text=True, start_new_session=True) for i in range(2)]

  def wait(self, timeout=600):
    """(exit statuses, stderr texts) once both have ended; neither is left running."""
    try:
      codes = [p.wait(timeout=timeout) for p in self.procs]
    finally:
      for p in self.procs:
        try:
          os.killpg(p.pid, signal.SIGKILL)  # and any input worker it left
        except ProcessLookupError:
          pass
    texts = []
    for f in self.errs:
      f.seek(0)
      texts.append(f.read())
      f.close()
    return codes, texts


def test_two_processes_over_localhost_match_one_process_and_restore_on_other_meshes(built, short_run, tmp_path):
  """Real multi-process JAX: 2 processes x 4 CPU devices (gloo) form one 8-device mesh and match the
  1-process run, kNN included, in 2 micro-batches with drop path (each micro-batch the same clips). Then the 2-process checkpoint continues on 1 process with an FSDP x tensor
  mesh, and the 1-process one on 2 processes with a (2, 2, 2) mesh: both give the same losses."""
  steps = 5
  run = str(tmp_path / 'two')
  codes, errs = _Two(_cmd(built, run, steps, *EVAL, *MICRO, DATA_TENSOR), tmp_path, 'two').wait()
  assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
  assert 'process 0 of 2' in errs[0] and 'process 1 of 2' in errs[1] and '8 devices' in errs[0]
  want, got = helpers.losses(short_run), helpers.losses(run)
  assert sorted(got) == list(range(1, steps + 1))
  # Collectives over two processes sum in another order: helpers.LOSS_RTOL.
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=helpers.LOSS_RTOL)
  assert helpers.checkpoints(run)[-1] == steps
  # The kNN over two processes' devices: the same clips and features. Its numbers are counts of clips,
  # equal unless two similarities tie to within rounding.
  assert _evals(run) == _evals(short_run)
  picture = lambda w: np.asarray(Image.open(os.path.join(w, 'reconstructions', 'step_0000005.png')), int)
  # The global batch's first clips. Pixels are rounded to 8 bits: a rounding-sized difference can cross a
  # half level.
  np.testing.assert_allclose(picture(run), picture(short_run), atol=1)
  # The 2-process checkpoint on 1 process and another mesh; the 1-process one on 2 processes.
  one = str(tmp_path / 'one')
  shutil.copytree(short_run, one)
  out = _run(_cmd(built, run, 8, *MICRO, '--config.mesh=(1,4,2)'))
  assert out.returncode == 0 and f'Resumed from step {steps}' in out.stderr, out.stderr[-3000:]
  assert "Mesh {'data': 1, 'fsdp': 4, 'tensor': 2}" in out.stderr and 'does not fit this run' in out.stderr
  codes, errs = _Two(_cmd(built, one, 8, *MICRO, '--config.mesh=(2,2,2)'), tmp_path, 'one').wait()
  assert codes == [0, 0] and f'Resumed from step {steps}' in errs[0], errs[0][-3000:]
  want, got = helpers.losses(one), helpers.losses(run)
  np.testing.assert_allclose([got[s] for s in range(6, 9)], [want[s] for s in range(6, 9)], rtol=helpers.LOSS_RTOL)


def test_two_processes_agree_on_preemption_and_stop_when_one_is_lost(built, reference, tmp_path):
  """SIGTERM to process 1 alone: both save the same step and exit 0. Restarted, SIGKILL of process 1: process
  0 stops within its heartbeat timeout, naming the lost process. Restarted again, the run ends with the
  uninterrupted run's loss at every step."""
  run = str(tmp_path / 'run')
  cmd = _cmd(built, run, 40, '--heartbeat_timeout=10')
  two = _Two(cmd, tmp_path, 'term')
  helpers.wait_for_checkpoint(run, two.procs[0], 4)
  two.procs[1].send_signal(signal.SIGTERM)
  codes, errs = two.wait(timeout=120)
  assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
  saved = [int(re.search(r'every process saves step (\d+)', e).group(1)) for e in errs]
  assert saved[0] == saved[1] == helpers.checkpoints(run)[-1] < 40
  two = _Two(cmd, tmp_path, 'kill')
  helpers.wait_for_checkpoint(run, two.procs[0], saved[0] + 4)
  two.procs[1].kill()
  start = time.time()
  codes, errs = two.wait(timeout=120)
  assert codes[0] != 0 and time.time() - start < 10 + 30, errs[0][-3000:]
  assert re.search(r'tasks are unhealthy \(stopped sending heartbeats\):\s*1\b', errs[0]), errs[0][-3000:]
  codes, errs = _Two(cmd, tmp_path, 'end').wait()
  assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
  want, got = helpers.losses(reference), helpers.losses(run)
  assert sorted(got) == list(range(1, 41))
  # Two processes against the 1-process reference: helpers.LOSS_RTOL.
  np.testing.assert_allclose([got[s] for s in range(1, 41)], [want[s] for s in range(1, 41)], rtol=helpers.LOSS_RTOL)


def test_an_unreadable_latest_checkpoint_is_set_aside(built, reference, tmp_path):
  """The latest checkpoint's array files truncated: one warning names it, it is moved aside (not deleted),
  and the run resumes from the one before with the uninterrupted run's losses."""
  run = str(tmp_path / 'run')
  shutil.copytree(reference, run)
  last = helpers.checkpoints(run)[-1]
  before = helpers.checkpoints(run)[-2]
  for d, _, files in os.walk(os.path.join(run, 'checkpoints', str(last), 'state')):
    for f in files:
      if os.path.basename(d) == 'd':  # the array data files
        path = os.path.join(d, f)
        os.truncate(path, os.path.getsize(path) // 2)
  logged = len(metrics_lib.read_jsonl(os.path.join(run, 'metrics.jsonl')))
  out = _run(_cmd(built, run, 40))
  assert out.returncode == 0, out.stderr[-3000:]
  warned = [line for line in out.stderr.splitlines() if 'does not restore' in line]
  assert len(warned) == 1 and os.path.join(run, 'checkpoints', str(last)) in warned[0], warned
  assert f'Resumed from step {before}' in out.stderr
  assert os.path.isdir(os.path.join(run, 'checkpoints_unreadable', str(last)))
  new = {r['step']: r['loss'] for r in metrics_lib.read_jsonl(os.path.join(run, 'metrics.jsonl'))[logged:]
         if 'loss' in r}  # what the restarted run logged
  want = helpers.losses(reference)
  assert sorted(new) == list(range(before + 1, 41))
  assert [new[s] for s in sorted(new)] == [want[s] for s in sorted(new)]  # the same program: bit-exact


def test_a_workdir_given_as_a_path_object(built, tmp_path):
  """Everything a run writes goes through etils.epath: a workdir that is a path object, not a string, gets
  the run files, metrics, pictures and checkpoints, and resumes."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from mgjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mgjax.train import pretrain  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file('configs/demo.py')
  config.data.update(data_dir=built, split='all', workers=0)
  config.model.update(frames=4, image_size=32)
  config.update(global_batch=8, total_steps=2, viz_every=2, eval_every=0, log_every=1)
  workdir = epath.Path(tmp_path) / 'run'
  out = pretrain.train_and_evaluate(config, workdir)
  assert out['steps'] == 2 and not out['preempted']
  for name in ('config.json', 'run_info.json', 'memory.json', 'metrics.jsonl', 'reconstructions/step_0000002.png',
               'checkpoints/2'):
    assert (workdir / name).exists(), name
  config.total_steps = 3
  again = pretrain.train_and_evaluate(config, workdir)  # resumes at step 2: runs step 3 only
  assert again['steps'] == 3 and len(again['losses']) == 1
  assert sorted(helpers.losses(str(workdir))) == [1, 2, 3]


def test_a_bucket_workdir_trains_resumes_evaluates_and_exports(built, reference, bucket, tmp_path):
  """A workdir in a bucket (gs://, a Cloud Storage server on 127.0.0.1): a run stopped by SIGTERM resumes
  from the bucket and gives the reference's loss at every step, in metrics.jsonl and in TensorBoard (its
  event file parts read back as one run); mgjax.export and mgjax.evaluate read the checkpoint from the
  bucket and write there, with the weights and numbers of the same local checkpoint, passing over a step
  still being written; a resume during an outage of the bucket waits it out and moves nothing."""
  from mgjax import files  # pylint: disable=g-import-not-at-top
  from mgjax import weights  # pylint: disable=g-import-not-at-top
  from mgjax.models import convert  # pylint: disable=g-import-not-at-top
  from tests import gcs_emulator  # pylint: disable=g-import-not-at-top
  root, env = bucket
  run = f'{root}/pretrain'
  status, err = helpers.interrupt(_cmd(built, run, 40), run, 8, signal.SIGTERM, env=env)
  assert status == 0 and 'after SIGTERM' in err, err[-3000:]
  stopped = max(helpers.losses(run))
  assert 8 <= stopped < 40
  out = _run(_cmd(built, run, 40), env=env)
  assert out.returncode == 0 and f'Resumed from step {stopped}' in out.stderr, out.stderr[-3000:]
  want = helpers.losses(reference)
  assert helpers.losses(run) == want  # bit-exact, every step
  for name in ('config.json', 'run_info.json', 'memory.json', 'checkpoints/40/state', 'checkpoints/40/model'):
    assert (files.path(run) / name).exists(), name

  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  parts = sorted((files.path(run) / 'tensorboard').iterdir())
  assert len(parts) >= 2 and all('tfevents' in p.name for p in parts)  # a part per flush, each run its own
  for p in parts:
    (tmp_path / p.name).write_bytes(p.read_bytes())
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert {e.step: e.value for e in events.Scalars('loss')} == want

  # A step being written: in a bucket orbax writes in place and marks the step complete last
  # (commit_success.txt), so its directory exists before it holds a checkpoint. The readers skip it.
  (files.path(run) / 'checkpoints' / '99' / 'state' / '_METADATA').write_text('{}')
  out = _run([sys.executable, '-m', 'mgjax.export', f'--checkpoint={run}', '--format=hf', f'--out={root}/hf'],
             env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  got, ref = convert.flatten(weights.load(f'{root}/hf').params), convert.flatten(weights.load(reference).params)
  assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)

  evaluate = [sys.executable, '-m', 'mgjax.evaluate', '--config=configs/eval.py', f'--config.data_dir={built}',
              '--config.tasks=knn', '--config.num_clips=1', '--config.evals.knn.k=5']
  for checkpoint, workdir in ((run, f'{root}/eval'), (reference, str(tmp_path / 'eval'))):
    out = _run([*evaluate, f'--config.checkpoint={checkpoint}', f'--workdir={workdir}'], env=env)
    assert out.returncode == 0, out.stderr[-3000:]
  remote, local = (files.read_json(files.path(w) / 'results.json') for w in (f'{root}/eval', tmp_path / 'eval'))
  assert remote['checkpoint_read'] == f'{run}/checkpoints/40' and remote['knn'] == local['knn']

  # An outage while resuming: the bucket answers 503 to the first 6 reads of the latest step's input item,
  # as many as its client (gcsfs) tries; the run reads the step again and resumes from it, nothing moved.
  gcs_emulator.fail(env, 'pretrain/checkpoints/40/input/', 6)
  out = _run(_cmd(built, run, 40), env=env)  # resumes at its last step: the restore alone
  assert out.returncode == 0 and 'Resumed from step 40' in out.stderr, out.stderr[-3000:]
  assert gcs_emulator.failures(env) == 6
  assert re.search(r'Checkpoint gs://mgjax-test/pretrain/checkpoints/40: reading failed \(HttpError: '
                   r'Service Unavailable, 503\); trying again', out.stderr), out.stderr[-3000:]
  assert not (files.path(run) / 'checkpoints_unreadable').exists()
  assert (files.path(run) / 'checkpoints' / '40' / 'state').exists()


def test_restore_tells_damaged_data_from_a_failure_to_read(tmp_path):
  """What decides whether a checkpoint is set aside: the errors real reads raise. A truncated or missing
  array file (TensorStore's OUT_OF_RANGE, NOT_FOUND) is damage; a refused connection or a timeout is a
  failure to read, tried again, never a reason to move a checkpoint; anything else is neither."""
  import socket  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from mgjax.train import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  state = {'w': np.arange(50000, dtype=np.float32)}
  mngr = ocp.CheckpointManager(tmp_path / 'c', item_names=('state',), options=ocp.CheckpointManagerOptions(create=True))
  mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  mngr.wait_until_finished()
  target = {'w': jax.ShapeDtypeStruct((50000,), np.float32)}

  def restore_error():
    try:
      ocp.CheckpointManager(tmp_path / 'c', item_names=('state',)).restore(
          1, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except Exception as e:  # pylint: disable=broad-except
      return e
    raise AssertionError('restored')

  data = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'c') for f in fs if os.path.basename(d) == 'd']
  for path in data:
    os.truncate(path, os.path.getsize(path) // 2)
  assert ckpt.classify(restore_error()) == 'damaged'
  for path in data:
    os.remove(path)
  assert ckpt.classify(restore_error()) == 'damaged'
  with pytest.raises(ConnectionRefusedError) as refused:
    socket.create_connection(('127.0.0.1', helpers.free_port()), timeout=5).close()  # nothing listens
  with pytest.raises(RuntimeError) as wrapped:
    raise RuntimeError('orbax: item restore failed') from refused.value
  assert ckpt.classify(wrapped.value) == 'transient'
  assert ckpt.classify(ValueError('INVALID_ARGUMENT: a spec this version does not read')) == 'other'
  with socket.create_server(('127.0.0.1', 0)) as server, socket.create_connection(server.getsockname()) as c:
    c.settimeout(0.05)
    with pytest.raises(TimeoutError) as timed_out:
      c.recv(1)  # the server never sends
  assert ckpt.classify(timed_out.value) == 'transient'
