r"""Pretraining binary.

    python -m mgjax.main --config=configs/vmae_l.py --workdir=DIR [--config.global_batch=256 ...]

Multi-host: every process runs the same command; set --coordinator=HOST:PORT --num_processes=N
--process_id=I (or let jax.distributed find them on TPU pods and SLURM). On CPU the processes talk gloo.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import jax

from mgjax import config as config_lib

flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and pictures go. Reused to resume.')
flags.DEFINE_string('coordinator', None, 'host:port of process 0, for multi-process runs.')
flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process in a multi-process run.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() with what the environment says '
                  '(TPU pods, SLURM).')
config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def init_distributed():
  if FLAGS.coordinator or FLAGS.distributed:
    # Before anything touches a backend. gloo carries the collectives between CPU processes (no effect
    # on GPU or TPU, whose collectives go over NCCL or ICI).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)


def _quiet_libraries():
  """orbax logs every step of every save at INFO; keep its warnings and errors only."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  std_logging.getLogger('absl').addFilter(
      lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname)


def main(argv):
  del argv
  _quiet_libraries()
  init_distributed()
  from mgjax.train import loop  # pylint: disable=g-import-not-at-top
  logging.info('JAX %s on %s: %d devices, process %d of %d', jax.__version__, jax.default_backend(),
               jax.device_count(), jax.process_index(), jax.process_count())
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
