r"""Export binary: weights of an mgjax checkpoint (or of any directory mgjax.weights reads) in another format.

    python -m mgjax.export --checkpoint=PATH --format=hf|official|orbax --out=DIR

PATH: an mgjax workdir (its latest checkpoint), one checkpoint (WORKDIR/checkpoints/STEP), or a directory
this command wrote (any format: it converts between them). The formats are described in mgjax/weights.py.
"""

from absl import flags

from mgjax import cli
from mgjax import files
from mgjax import weights
from mgjax.models import videomae

flags.DEFINE_string('checkpoint', None, 'mgjax workdir, checkpoint, or exported directory.')
flags.DEFINE_enum('format', None, ['hf', 'official', 'orbax'], 'What to write.')
flags.DEFINE_string('out', None, 'Output directory.')


def main(argv):
  del argv
  f = flags.FLAGS
  files.writable_dir(f.out, '--out')  # before the weights are read: a wrong target fails at once
  w = weights.load(f.checkpoint)
  weights.write(w, f.format, f.out)
  n = videomae.count_params(w.params)
  print(f'wrote {f.format} weights ({n / 1e6:.2f}M parameters, model {w.model.size}'
        f'{", " + str(w.num_classes) + " classes" if w.num_classes else ""}) to {f.out}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['checkpoint', 'format', 'out'])
  cli.run(main)
