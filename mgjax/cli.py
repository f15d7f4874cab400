"""What the binaries share: the run flags, multi-process start-up, quiet library logs, and running main
with user errors reported on one line. Defines no flags itself: each binary calls `define_run_flags`."""

from __future__ import annotations

import importlib
import logging as std_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mgjax import config as config_lib
from mgjax import errors

FLAGS = flags.FLAGS


def define_process_flags():
  """The flags of a multi-process run (every binary that runs on several processes)."""
  flags.DEFINE_string('coordinator', None, 'host:port of process 0, for multi-process runs.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
  flags.DEFINE_integer('process_id', None, 'This process in a multi-process run.')
  flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() with what the environment '
                    'says (TPU pods, SLURM).')
  flags.DEFINE_integer('heartbeat_timeout', 60, 'Seconds without a heartbeat after which a process counts '
                       'as lost; the others then stop with an error naming it.')


def define_run_flags():
  """--config, --workdir and the multi-process flags of the training binaries."""
  flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and pictures go. Reused to resume.')
  define_process_flags()
  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  flags.mark_flags_as_required(['config', 'workdir'])


def start_processes():
  """jax.distributed for a multi-process run (--coordinator or --distributed), before anything touches
  a backend. gloo carries the collectives between CPU processes (GPU and TPU use NCCL or ICI). A process
  that stops sending heartbeats for --heartbeat_timeout seconds counts as lost, and the others stop."""
  if FLAGS.coordinator or FLAGS.distributed:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout,
                               shutdown_timeout_seconds=FLAGS.heartbeat_timeout)
  logging.info('JAX %s on %s: %d devices, process %d of %d', jax.__version__, jax.default_backend(),
               jax.device_count(), jax.process_index(), jax.process_count())


def quiet_libraries():
  """orbax logs every step of every save at INFO; keep its warnings and errors only."""
  std_logging.getLogger('absl').addFilter(
      lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname)


def run(main):
  """app.run(main) with the config-aware flag parser; a UserError ends the run with its message on one
  line (`error: ...`) and exit status 2."""
  def wrapped(argv):
    quiet_libraries()
    try:
      return main(argv)
    except errors.UserError as e:
      sys.stderr.write(f'error: {e}\n')
      sys.exit(2)
  app.run(wrapped, flags_parser=config_lib.parse_flags)


def run_training(module: str):
  """The training binaries' main: start the processes, then `module`.train_and_evaluate(config, workdir)
  (imported after jax.distributed is up)."""
  def main(argv):
    del argv
    start_processes()
    importlib.import_module(module).train_and_evaluate(FLAGS.config, FLAGS.workdir)
  run(main)
