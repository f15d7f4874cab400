"""The pretraining binary end to end: exact resume after SIGKILL, SIGTERM checkpointing, non-finite stop.

Each test runs `python -m mgjax.main` in a subprocess on the sample records (8 fake CPU devices).
"""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np

from tests import helpers

REPO = helpers.REPO


def _cmd(built, workdir, steps, *extra):
  return [sys.executable, '-m', 'mgjax.main', '--config=configs/demo.py', f'--workdir={workdir}',
          f'--config.data.data_dir={built}', '--config.data.split=all', '--config.model.frames=4',
          '--config.model.image_size=32', '--config.global_batch=8', '--config.data.num_repeats=2',
          '--config.data.workers=0', f'--config.total_steps={steps}', '--config.checkpoint.every_steps=4',
          '--config.log_every=1', '--config.viz_every=0', '--config.optim.warmup_steps=2', *extra]


def _run(cmd, **kw):
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **kw)


def test_sigkill_then_restart_gives_exactly_the_same_losses(built, tmp_path):
  steps = 40
  ref = str(tmp_path / 'ref')
  out = _run(_cmd(built, ref, steps))
  assert out.returncode == 0, out.stderr[-3000:]
  want = helpers.losses(ref)
  assert sorted(want) == list(range(1, steps + 1))
  assert np.mean([want[s] for s in range(31, 41)]) < np.mean([want[s] for s in range(1, 11)])

  run = str(tmp_path / 'killed')
  proc = subprocess.Popen(_cmd(built, run, steps), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    helpers.wait_for_step(run, proc, 14)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  killed_at = max(helpers.losses(run))
  assert killed_at < steps
  out = _run(_cmd(built, run, steps))  # same command, same workdir: resumes by itself
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Resumed from step' in out.stderr
  got = helpers.losses(run)
  assert got == want  # bit-exact, every step
  assert helpers.checkpoints(run)[-1] == steps


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(built, tmp_path):
  run = str(tmp_path / 'run')
  proc = subprocess.Popen(_cmd(built, run, 10000), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  helpers.wait_for_step(run, proc, 6)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  last = max(helpers.losses(run))
  assert helpers.checkpoints(run)[-1] == last  # saved at the step it stopped, not only at every_steps
  assert 'after SIGTERM' in err
  out = _run(_cmd(built, run, last + 2))
  assert out.returncode == 0 and f'Resumed from step {last}' in out.stderr, out.stderr[-3000:]
  assert max(helpers.losses(run)) == last + 2


def test_non_finite_loss_stops_with_a_clear_message(built, tmp_path):
  run = str(tmp_path / 'run')
  # Checkpoints every 3 steps: the loss turns non-finite at step 3, a checkpoint step.
  out = _run(_cmd(built, run, 40, '--config.optim.base_lr=1e12', '--config.checkpoint.every_steps=3'))
  assert out.returncode != 0
  assert 'non-finite loss' in out.stderr, out.stderr[-3000:]
  # Metrics are read one step late, but always before a checkpoint: none is saved at or past the bad step.
  bad = int(re.search(r'non-finite loss .* at step (\d+);', out.stderr).group(1))
  assert all(step < bad for step in helpers.checkpoints(run)), (bad, helpers.checkpoints(run))
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  for step in helpers.checkpoints(run):
    restored = ocp.StandardCheckpointer().restore(os.path.join(run, 'checkpoints', str(step), 'state'))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored)), step


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
  out = _run([sys.executable, '-m', 'mgjax.evaluate', '--config=configs/eval.py', '--config.knn.kk=3',
              f'--workdir={tmp_path / "eval"}'])
  assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert "config.knn has no field 'kk' (did you mean config.knn.k?)" in out.stderr, out.stderr[-3000:]
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
  prog = ('from absl import app, flags; from ml_collections import config_flags; '
          'config_flags.DEFINE_config_file("config", lock_config=True); '
          'app.run(lambda _: print("depth", flags.FLAGS.config.model.decoder_depth))')
  for name in ('vmae_s', 'vmae_b', 'vmae_l', 'vmae_h', 'finetune_s', 'finetune_b', 'finetune_l', 'demo',
               'demo_s112'):
    for extra, want in (([], 2 if 'demo' in name else None), (['--config.model.decoder_depth=4'], 4)):
      out = _run([sys.executable, '-c', prog, f'--config=configs/{name}.py', *extra])
      assert out.returncode == 0 and f'depth {want}' in out.stdout, (name, extra, out.stderr[-500:])


def test_two_processes_over_localhost_match_one_process(built, tmp_path):
  """Real multi-process JAX: 2 processes x 4 CPU devices (gloo) form one 8-device mesh."""
  steps = 5
  ref = str(tmp_path / 'one')
  out = _run(_cmd(built, ref, steps))
  assert out.returncode == 0, out.stderr[-3000:]
  run = str(tmp_path / 'two')
  port = helpers.free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  procs = [subprocess.Popen(_cmd(built, run, steps, f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
                                 f'--process_id={i}'), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  errs = [p.communicate(timeout=600)[1] for p in procs]
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-3000:]
  assert 'process 0 of 2' in errs[0] and 'process 1 of 2' in errs[1] and '8 devices' in errs[0]
  want, got = helpers.losses(ref), helpers.losses(run)
  assert sorted(got) == list(range(1, steps + 1))
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)
  assert helpers.checkpoints(run)[-1] == steps
