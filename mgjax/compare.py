r"""How much better is evaluation A than evaluation B, and how sure is that?

    python -m mgjax.compare A_WORKDIR B_WORKDIR [--resamples=2000] [--confidence=0.9]

Reads predictions.npz of two mgjax.evaluate workdirs on the same test clips (say a pretrained model and
the same model at random initialisation) and prints, for each of knn, linear_probe and recognition that
both hold, top-1 of A and of B, the difference A - B in points and its confidence interval from a paired
bootstrap over test subjects: whole subjects are resampled with replacement, as the cross-subject split
holds out whole people and clips of one person are not independent. Writes nothing.
"""

from absl import app, flags

from mgjax import cli
from mgjax.evals import compare as compare_lib

flags.DEFINE_integer('resamples', 2000, 'bootstrap resamples of the test subjects')
flags.DEFINE_float('confidence', 0.9, 'two-sided confidence of the interval')
flags.DEFINE_integer('seed', 0, 'seed of the resampling')


def main(argv):
  if len(argv) != 3:
    raise app.UsageError('usage: python -m mgjax.compare A_WORKDIR B_WORKDIR')
  f = flags.FLAGS
  r = compare_lib.compare(compare_lib.load(argv[1]), compare_lib.load(argv[2]), f.resamples, f.confidence,
                          f.seed, names=argv[1:])
  if not r:
    raise SystemExit(f'no task in common: both workdirs need predictions of one of {compare_lib.TASKS}')
  print(f'A = {argv[1]}\nB = {argv[2]}\n')
  print(f'| task | top-1 A | top-1 B | A - B | {100 * f.confidence:g}% interval | test clips / subjects |')
  print('|---|---|---|---|---|---|')
  for task, v in r.items():
    print(f"| {task} | {v['top1_a']:.1f} | {v['top1_b']:.1f} | {v['difference']:+.1f} | "
          f"[{v['low']:+.1f}, {v['high']:+.1f}] | {v['clips']} / {v['subjects']} |")


if __name__ == '__main__':
  cli.run(main)
