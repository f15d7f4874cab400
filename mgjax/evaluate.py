r"""Evaluation binary: frozen-feature tasks and fine-tuned recognition of one checkpoint.

    python -m mgjax.evaluate --config=configs/eval.py --config.checkpoint=PATH --config.data_dir=D --workdir=DIR

What it writes (results.json, report.md, predictions.npz, plots, the feature cache) is described in
mgjax/evals/run.py, the library this binary's flags call.
"""

from __future__ import annotations

import json

import jax
from absl import flags, logging
from ml_collections import config_flags

from mgjax import cli
from mgjax.evals import run

flags.DEFINE_string('workdir', None, 'Where results.json, report.md, plots and the feature cache go.')
cli.define_process_flags()
config_flags.DEFINE_config_file('config', None, 'Evaluation config.', lock_config=True)


def main(argv):
  del argv
  cli.start_processes()
  results = run.evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  logging.info('results: %s', json.dumps({k: {kk: vv for kk, vv in v.items() if not isinstance(vv, dict)}
                                           for k, v in results.items() if isinstance(v, dict) and k != 'model'}))
  if jax.process_index() == 0:
    print(run.report(results))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main)
