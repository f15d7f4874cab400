r"""Fine-tuning binary.

    python -m mgjax.finetune --config=configs/finetune_l.py --config.init=PATH --workdir=DIR

PATH: an mgjax pretraining workdir or checkpoint, an exported directory (mgjax.export: hf, official,
orbax). Same multi-host flags as mgjax.main. The same workdir resumes; SIGTERM saves and exits.
"""

from absl import app, flags

from mgjax import config as config_lib
from mgjax import main as main_lib

FLAGS = flags.FLAGS


def main(argv):
  del argv
  main_lib._quiet_libraries()  # pylint: disable=protected-access
  main_lib.init_distributed()
  from mgjax.train import finetune  # pylint: disable=g-import-not-at-top
  finetune.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
