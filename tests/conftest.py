"""Shared fixtures. 8 fake CPU devices are configured before anything imports jax."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
# One persistent compilation cache for the whole test run, this process and every training subprocess it
# starts (they inherit the environment): the many short runs of the same tiny model compile once.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='mgjax-tests-xla-cache-')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'

import pytest  # noqa: E402

from tests import helpers  # noqa: E402


@pytest.fixture(scope='session')
def sample(tmp_path_factory):
  """A small sample manual_dir: 4 subjects (2 train, 2 test), 9 videos, shot cuts and static intros."""
  manual = str(tmp_path_factory.mktemp('sample') / 'manual')
  truth = helpers.make_sample(manual)
  return manual, truth


@pytest.fixture(scope='session')
def built(sample, tmp_path_factory):
  """The sample built into a data_dir with the Python API (clips and pretrain, 2 workers)."""
  manual, _ = sample
  data_dir = str(tmp_path_factory.mktemp('data'))
  for config in ('clips', 'pretrain'):
    helpers.build(manual, data_dir, config, num_workers=2)
  return data_dir


@pytest.fixture(scope='session')
def pretrain_run(built, tmp_path_factory):
  """A real mgjax pretraining run of 2 steps (tiny T model) on the built sample: a workdir to start from."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  run = str(tmp_path_factory.mktemp('pretrain_run'))
  cmd = [sys.executable, '-m', 'mgjax.main', '--config=configs/demo.py', f'--workdir={run}',
         f'--config.data.data_dir={built}', '--config.data.split=all', '--config.model.size=T',
         '--config.model.decoder_depth=1', '--config.model.frames=4', '--config.model.image_size=32',
         '--config.global_batch=8', '--config.data.workers=0', '--config.total_steps=2', '--config.viz_every=0',
         '--config.eval_every=0']
  out = subprocess.run(cmd, cwd=helpers.REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return run


@pytest.fixture(scope='session')
def finetune_run(built, pretrain_run, tmp_path_factory):
  """A real fine-tuning run of 6 steps from pretrain_run on 30% of the labelled clips (tiny T model)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  run = str(tmp_path_factory.mktemp('finetune_run'))
  out = subprocess.run(helpers.finetune_cmd(built, pretrain_run, run, 6, '--config.label_fraction=0.3'),
                       cwd=helpers.REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return run


@pytest.fixture(scope='session')
def bucket():
  """A Google Cloud Storage bucket on 127.0.0.1 (tests/gcs_emulator.py): its gs:// root, and the
  environment a run needs to reach it (also set in this process, for reading what runs wrote)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  from tests import gcs_emulator  # pylint: disable=g-import-not-at-top
  port = helpers.free_port()
  proc = subprocess.Popen([sys.executable, '-m', 'tests.gcs_emulator', str(port), 'mgjax-test'], cwd=helpers.REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=1).read()
      break
    except OSError:
      assert proc.poll() is None and time.time() < deadline, 'the storage emulator did not start'
      time.sleep(0.2)
  env = gcs_emulator.environment(port)
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield 'gs://mgjax-test', dict(os.environ)
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  proc.kill()
  proc.wait()
