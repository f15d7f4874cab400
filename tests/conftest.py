"""Shared fixtures. 8 fake CPU devices are configured before anything imports jax."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

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
