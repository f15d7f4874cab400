r"""Input benchmark: the real pretraining pipeline of a config, per host core.

    python -m mgjax.bench.input --config=configs/vmae_l.py [--data_dir=D | --workdir=DIR] [--batch=32]
        [--batches=6] [--workers=0] [--step_clips_per_s=393.5]

Runs what `mgjax.main` feeds the train step (read the records, decode the window's JPEG frames, quality-aware
sampling, the multi-scale crop resized to the model's size, tube masks (and dual masks when the config sets
them), batching), first without repeated augmentation, then with the config's `data.num_repeats`. With
--workers=0 (the default) everything runs in this process, so the clips per CPU second are the rate of
one core; with more, grain's worker processes run it and the wall-clock rate is what they give together.

Without --data_dir it first makes the records `mgjax.bench.decode` reads: source videos at 1280x720 (H.264)
from the sample generator, built into the `pretrain` config (JPEG frames, short side 256). It prints how
many host cores one accelerator needs at --step_clips_per_s (the train step's clips/s on that accelerator)
and ends with `clips/s per core: X` (without repeated augmentation).
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from mgjax.bench import decode
from mgjax.data import pretrain as pipeline
from mgjax.data import stream
from mgjax.train import pretrain

flags.DEFINE_string('data_dir', None, 'Built records (TFDS data_dir); default: build sample records.')
flags.DEFINE_integer('batch', 32, 'Clips per batch.')
flags.DEFINE_integer('batches', 6, 'Timed batches, after one untimed.')
flags.DEFINE_integer('workers', 0, 'Grain worker processes (0: this process alone, the per-core figure).')
flags.DEFINE_string('workdir', None, 'Where to build the sample records (default: a temporary folder).')
flags.DEFINE_integer('videos', 2, 'Source videos to render when building records.')
flags.DEFINE_integer('seconds', 20, 'Length of each rendered source video.')
flags.DEFINE_float('step_clips_per_s', 393.5, "The train step's clips/s on one accelerator (default: vmae_l, "
                   'batch 32, on one H200, the README).')
config_flags.DEFINE_config_file('config', None, 'Pretraining config.', lock_config=True)
FLAGS = flags.FLAGS


def sample_records(work: str, videos: int, seconds: int) -> str:
  """Sample records as mgjax.bench.decode builds them: the data_dir."""
  manual, data = os.path.join(work, 'manual'), os.path.join(work, 'data')
  decode.render_sources(manual, videos, seconds, seed=0)
  decode.build(manual, data, 256, workers=1)
  return data


def measure(pcfg: pipeline.PipelineConfig, batches: int) -> tuple[float, float, dict]:
  """(clips per wall second, clips per CPU second of this process, one batch) over `batches` batches."""
  it = iter(pipeline.make_dataset(pcfg))
  first = next(it)  # opens the records, starts the workers
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(it)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  clips = batches * pcfg.global_batch
  return clips / wall, clips / cpu, first


def main(argv):
  del argv
  config = FLAGS.config
  data_dir = FLAGS.data_dir
  if not data_dir:
    work = FLAGS.workdir or tempfile.mkdtemp(prefix='mgjax_bench_input_')
    t = time.perf_counter()
    data_dir = sample_records(work, FLAGS.videos, FLAGS.seconds)
    print(f'records: {FLAGS.videos} sample videos of {FLAGS.seconds} s at 1280x720 built into {data_dir} '
          f'in {time.perf_counter() - t:.0f} s')
  model_cfg = pretrain.model_config(config)
  split = 'all' if not FLAGS.data_dir else config.data.split
  with config.unlocked():
    config.global_batch = FLAGS.batch
    config.micro_batches = 1
    config.data.split = split
    config.data.workers = FLAGS.workers
  print(f'{model_cfg.size}: {model_cfg.frames} frames at stride {config.data.stride}, {model_cfg.image_size} px, '
        f'sampling {config.data.sampling}, mask {model_cfg.mask_type} {model_cfg.mask_ratio}, '
        f'decoder_mask_ratio {model_cfg.decoder_mask_ratio}; batch {FLAGS.batch}, workers {FLAGS.workers}, '
        f'{len(os.sched_getaffinity(0))} cores here')
  rates = {}
  for repeats in sorted({1, config.data.num_repeats}):
    with config.unlocked():
      config.data.num_repeats = repeats
    pcfg = pretrain.pipeline_config(config, data_dir, model_cfg)
    wall, per_cpu, batch = measure(pcfg, FLAGS.batches)
    workers = FLAGS.workers
    if workers < 0:  # the number the pipeline picked for this batch
      workers = stream.auto_workers(sum(v.nbytes for v in batch.values()), pcfg.prefetch)
    per_core = per_cpu if workers == 0 else wall / workers
    rates[repeats] = per_core
    assert batch['video'].shape == (FLAGS.batch, model_cfg.frames, model_cfg.image_size, model_cfg.image_size, 3)
    print(f'num_repeats {repeats}: {wall:.1f} clips/s wall, {per_core:.1f} clips/s per core; one accelerator '
          f'at {FLAGS.step_clips_per_s:g} clips/s needs {FLAGS.step_clips_per_s / per_core:.1f} host cores')
  print(f'clips/s per core: {rates[1]:.1f}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
