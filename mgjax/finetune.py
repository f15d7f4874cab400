r"""Fine-tuning binary.

    python -m mgjax.finetune --config=configs/finetune_l.py --config.init=PATH --workdir=DIR

PATH: an mgjax pretraining workdir or checkpoint, an exported directory (mgjax.export: hf, official,
orbax). Same multi-host flags as mgjax.main. The same workdir resumes; SIGTERM saves and exits.
"""

from mgjax import cli

cli.define_run_flags()

if __name__ == '__main__':
  cli.run_training('mgjax.train.finetune')
