r"""Pretraining binary.

    python -m mgjax.main --config=configs/vmae_l.py --workdir=DIR [--config.global_batch=256 ...]

Multi-host: every process runs the same command; set --coordinator=HOST:PORT --num_processes=N
--process_id=I (or let jax.distributed find them on TPU pods and SLURM). On CPU the processes talk gloo.
"""

from mgjax import cli

cli.define_run_flags()

if __name__ == '__main__':
  cli.run_training('mgjax.train.pretrain')
