"""The demo's data: with no data_dir, a run generates the synthetic sample dataset and builds its records."""

from __future__ import annotations

import os

import jax
from absl import logging

from mgjax import errors
from mgjax import files


def check_workdir(workdir: str):
  """The demo builds its records beside the workdir, on a filesystem: a bucket workdir is a config error."""
  if files.is_remote(workdir):
    raise errors.ConfigError(f'--workdir={workdir} is a bucket, and the demo builds its records beside the '
                             f'workdir on a filesystem: set --config.data.data_dir to built records')


def prepare(workdir: str, sample_args: dict) -> str:
  """Generates the sample dataset and builds its records (pretrain, and clips for evaluation) into
  workdir/demo_data, once."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_imigue3k import imigue3k_dataset_builder as builder_lib  # pylint: disable=g-import-not-at-top
  from tfds_imigue3k import sample  # pylint: disable=g-import-not-at-top
  check_workdir(workdir)
  root = os.path.join(workdir, 'demo_data')
  manual, data = os.path.join(root, 'manual'), os.path.join(root, 'records')
  if jax.process_index() == 0:
    if not os.path.exists(os.path.join(manual, 'sample_truth.json')):
      logging.info('No data_dir given: generating the sample dataset in %s', manual)
      sample.generate(manual, **sample_args)
    for name in ('pretrain', 'clips'):
      builder = builder_lib.Builder(config=name, data_dir=data)
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual),
                                   file_format='array_record')
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('demo data ready')
  return data
