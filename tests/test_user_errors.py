"""User errors end a binary with one line naming the key or path and what to do, exit status 2, and no
traceback: a data_dir without records, records of another builder version, a missing init checkpoint,
weights of another model, a config value out of range."""

import os
import shutil
import subprocess
import sys

import pytest

from mgjax.data import records
from tests import helpers


def _main(built, workdir, *extra):
  return [sys.executable, '-m', 'mgjax.main', '--config=configs/demo.py', f'--workdir={workdir}',
          f'--config.data.data_dir={built}', '--config.total_steps=2', '--config.data.workers=0', *extra]


def _old_version(built, root):
  """A copy of the built clips records as an older builder version would have left them."""
  old = os.path.join(root, 'imigue3k', 'clips', '0.9.0')
  shutil.copytree(os.path.join(built, 'imigue3k', 'clips', records.READABLE_VERSIONS[-1]), old)
  return root


CASES = {
    'no records': (lambda built, pre, tmp: _main('/nonexistent/records', tmp / 'w'),
                   ['/nonexistent/records: no imigue3k/pretrain records', 'tfds build']),
    'demo in a bucket': (lambda built, pre, tmp: [sys.executable, '-m', 'mgjax.main', '--config=configs/demo.py',
                                                  '--workdir=gs://no-such-bucket/run'],
                         ['--workdir=gs://no-such-bucket/run is a bucket', 'config.data.data_dir']),
    'unknown model size': (lambda built, pre, tmp: _main(built, tmp / 'w', '--config.model.size=Q'),
                           ["config.model.size: unknown 'Q'"]),
    'missing init': (lambda built, pre, tmp: helpers.finetune_cmd(built, str(tmp / 'nothing'), str(tmp / 'w'), 2),
                     [f'no such checkpoint: {{tmp}}{os.sep}nothing']),
    'init of another model': (
        lambda built, pre, tmp: helpers.finetune_cmd(built, pre, str(tmp / 'w'), 2, '--config.model.size=XS'),
        ['a T model (patch 16, tubelet 2) cannot initialise the XS config']),
    'micro-batches over the mesh': (lambda built, pre, tmp: _main(built, tmp / 'w', '--config.global_batch=8',
                                                                  '--config.micro_batches=2'),
                                    ['config.global_batch=8 in config.micro_batches=2 micro-batches does not split '
                                     'over the 8 devices']),
    'label fraction': (lambda built, pre, tmp: helpers.finetune_cmd(built, '', str(tmp / 'w'), 2,
                                                                     '--config.label_fraction=1.5'),
                       ['config.label_fraction=1.5']),
    'old builder version': (
        lambda built, pre, tmp: [sys.executable, '-m', 'mgjax.evaluate', '--config=configs/eval.py',
                                 '--config.checkpoint=random', f'--config.data_dir={_old_version(built, tmp / "d")}',
                                 f'--workdir={tmp / "e"}'],
        ['records of builder version 0.9.0; this mgjax reads version 1.0.0, 1.1.0']),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_user_error_is_one_line_without_traceback(case, built, pretrain_run, tmp_path):
  make, wanted = CASES[case]
  out = subprocess.run(make(built, pretrain_run, tmp_path), cwd=helpers.REPO, capture_output=True, text=True)
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert out.returncode == 2, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert lines[-1].startswith('error: '), lines[-5:]
  assert sum(line.startswith('error: ') for line in lines) == 1
  for w in wanted:
    assert w.format(tmp=tmp_path) in lines[-1], lines[-1]


BINARIES = {  # binary -> its command with the directory it writes in set to {out}
    'mgjax.main (the demo)': lambda built, pre, out: [sys.executable, '-m', 'mgjax.main', '--config=configs/demo.py',
                                                      f'--workdir={out}'],
    'mgjax.finetune': lambda built, pre, out: helpers.finetune_cmd(built, pre, out, 2),
    'mgjax.evaluate': lambda built, pre, out: [sys.executable, '-m', 'mgjax.evaluate', '--config=configs/eval.py',
                                               '--config.checkpoint=random', f'--config.data_dir={built}',
                                               f'--workdir={out}'],
    'mgjax.export': lambda built, pre, out: [sys.executable, '-m', 'mgjax.export', f'--checkpoint={pre}',
                                             '--format=hf', f'--out={out}'],
}


@pytest.mark.parametrize('binary', sorted(BINARIES))
def test_a_directory_that_cannot_be_written_is_one_line(binary, built, pretrain_run, tmp_path):
  """A file given as the directory to write in, a path under a file, and a path the system refuses
  (/proc): one line naming the flag and the path, exit status 2, the file untouched."""
  flag = '--out' if binary == 'mgjax.export' else '--workdir'
  a_file = tmp_path / 'a_file'
  a_file.write_text('keep me')
  for out, says in ((a_file, 'is a file, not a directory'), (a_file / 'run', 'cannot be written'),
                    ('/proc/mgjax-run', 'cannot be written')):
    res = subprocess.run(BINARIES[binary](built, pretrain_run, str(out)), cwd=helpers.REPO, capture_output=True,
                         text=True)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and 'Traceback' not in res.stderr, res.stderr[-3000:]
    assert lines[-1].startswith(f'error: {flag}={out} {says}'), lines[-3:]
    assert a_file.read_text() == 'keep me' and sorted(os.listdir(tmp_path)) == ['a_file']


def test_a_missing_or_unreachable_bucket_is_one_line_within_30_s(built, bucket, tmp_path):
  """A workdir or export target in a bucket that does not exist, or on a storage server that does not
  answer: one line naming the bucket and what to check, within 30 s, and no bucket is created."""
  import time  # pylint: disable=g-import-not-at-top
  import fsspec  # pylint: disable=g-import-not-at-top
  root, env = bucket
  nobody = dict(env, STORAGE_EMULATOR_HOST=f'http://127.0.0.1:{helpers.free_port()}')  # nothing listens
  train = lambda out: _main(built, out)
  export = lambda out: [sys.executable, '-m', 'mgjax.export', f'--checkpoint={tmp_path}', '--format=hf',
                        f'--out={out}']
  for make, flag, out, run_env, says in (
      (train, '--workdir', 'gs://mgjax-no-such-bucket/run', env, 'the bucket gs://mgjax-no-such-bucket does not exist'),
      (export, '--out', 'gs://mgjax-no-such-bucket/hf', env, 'the bucket gs://mgjax-no-such-bucket does not exist'),
      (train, '--workdir', f'{root}/run', nobody, 'check the network')):
    start = time.time()
    res = subprocess.run(make(out), cwd=helpers.REPO, capture_output=True, text=True, env=run_env, timeout=120)
    took = time.time() - start
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and 'Traceback' not in res.stderr, res.stderr[-3000:]
    assert lines[-1].startswith(f'error: {flag}={out}: ') and says in lines[-1], lines[-3:]
    assert took < 30, took
  assert fsspec.filesystem('gs', skip_instance_cache=True).ls('') == ['mgjax-test/']  # none created
  assert not fsspec.filesystem('gs', skip_instance_cache=True).exists(f'{root}/run')  # nothing written there
