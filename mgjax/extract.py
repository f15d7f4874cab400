r"""Dense features of untrimmed videos, for temporal detection and spotting heads of your own.

    python -m mgjax.extract --checkpoint=PATH --data_dir=D --out=DIR [--split=all --layer=-1 --pooling=mean
        --window=16 --stride=4 --hop=8 --batch=16 --videos=ID,ID]

PATH: an mgjax workdir or checkpoint, or an exported directory (what mgjax.evaluate reads). For every
video of the `pretrain` records' split, a window every `hop` frames (`window` frames, `stride` apart) goes
through the frozen encoder, and the tokens of block `layer` are pooled (mgjax/evals/dense.py says exactly
which frames and how). DIR gets, readable with numpy and json alone:

    settings.json        checkpoint, weights fingerprint, model, layer, pooling, window, stride, hop, size
    features/VID.npy     float32 (windows, D)
    features/VID.json    video_id, num_frames, fps, subject_id, emotion, labelled, window_start,
                         window_centre (frames); with frame labels (records of builder 1.1.0 on):
                         centre_label (class of each centre frame, -1 = none) and segments [start, end, class]
    index.json           settings, and per video its .npy, .json and number of windows

Written per video, the .json last and atomically: a killed extraction, run again with the same flags,
skips the videos already written. Other settings in the same DIR are an error (a mix of features would be
unusable). Over several processes (--coordinator ...) each takes every P-th video; the batch is split over
the local devices.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
from absl import flags, logging

from mgjax import cli
from mgjax import errors
from mgjax import files
from mgjax import layout
from mgjax.data import records
from mgjax.evals import dense
from mgjax.evals import features as features_lib
from mgjax.evals import run as run_lib
from mgjax.models import functional

flags.DEFINE_string('checkpoint', None, 'mgjax workdir, checkpoint or exported directory.')
flags.DEFINE_string('data_dir', None, 'Where the imigue3k pretrain records are.')
flags.DEFINE_string('out', None, 'Where the features go (created; reused to resume).')
flags.DEFINE_string('records', 'pretrain', 'Name of the pretrain records config.')
flags.DEFINE_string('split', 'all', 'Split of the records (train, heldout, all, or any TFDS split spec).')
flags.DEFINE_integer('layer', -1, 'Encoder block whose tokens are pooled (-1: the last, after its norm).')
flags.DEFINE_enum('pooling', 'mean', features_lib.POOLINGS, 'How a window\'s tokens are pooled.')
flags.DEFINE_integer('window', 0, 'Frames per window (0: the model\'s).')
flags.DEFINE_integer('stride', 4, 'Frames between a window\'s frames.')
flags.DEFINE_integer('hop', 8, 'Frames between window starts.')
flags.DEFINE_integer('batch', 16, 'Windows per forward pass (rounded up to the local devices).')
flags.DEFINE_list('videos', [], 'Only these video ids (default every video of the split).')
cli.define_process_flags()


def extract(checkpoint: str, data_dir: str, out: str, *, split: str = 'all', records_config: str = 'pretrain',
            layer: int = -1, pooling: str = 'mean', window: int = 0, stride: int = 4, hop: int = 8,
            batch: int = 16, video_ids=()) -> dict:
  """Writes DIR as the module docstring says; returns the index (on every process)."""
  for name, v in (('window', window), ('stride', stride), ('hop', hop), ('batch', batch)):
    if v < (0 if name == 'window' else 1):
      raise errors.ConfigError(f'--{name}={v}: must be positive')
  root = files.writable_dir(out, '--out')
  source = records.data_source(data_dir, records_config, split)
  pinned = layout.pin(checkpoint)
  fns, params = run_lib.load_model(None, pinned)
  model = dataclasses.replace(fns.cfg, frames=window or fns.cfg.frames)
  if model != fns.cfg:  # the position table is computed, not learned: any number of frames works
    fns = functional.ModelFns.create(model, fns.num_classes)
  fingerprint = features_lib.weights_fingerprint(params)
  predict, put = run_lib.predict_fns(fns, pooling, layer)
  params = put(params)
  settings = {'checkpoint': str(files.absolute(pinned)), 'weights': fingerprint,
              'model': dataclasses.asdict(model), 'data_dir': str(files.absolute(data_dir)),
              'records': records_config, 'split': split, 'layer': layer, 'pooling': pooling,
              'window': model.frames, 'stride': stride, 'hop': hop, 'size': model.image_size}
  before = files.read_json(root / 'settings.json')
  if before is not None and before != settings:
    changed = sorted(k for k in settings if before.get(k) != settings[k])
    raise errors.ConfigError(f'--out={out} holds features of other settings ({", ".join(changed)} differ): '
                             'give another --out, or the same flags to resume')
  if before is None and jax.process_index() == 0:
    files.write_json(root / 'settings.json', settings)
  everything = dense.videos(source)
  todo = everything
  if video_ids:
    known = {v.video_id for v in everything}
    missing = [v for v in video_ids if v not in known]
    if missing:
      raise errors.DataError(f'--videos: no video {", ".join(missing)} in {data_dir} '
                             f'{records_config} split {split!r} ({len(known)} videos)')
    todo = [v for v in everything if v.video_id in set(video_ids)]
  mine = todo[jax.process_index()::jax.process_count()]
  feats = root / 'features'
  feats.mkdir(parents=True, exist_ok=True)
  devices = jax.local_device_count()
  skipped = 0
  for i in features_lib.progress(len(mine), 'videos', unit='video'):
    v = mine[i]
    if (feats / f'{v.video_id}.json').exists():
      skipped += 1
      continue
    got = dense.video_features(source, v, lambda x: predict['features'](params, x), frames=model.frames, stride=stride,
                               hop=hop, size=model.image_size, batch=-(-batch // devices) * devices)
    files.write_atomic(feats / f'{v.video_id}.npy', lambda f, x=got['features']: np.save(f, x), binary=True)
    meta = {'video_id': v.video_id, 'num_frames': v.num_frames, 'fps': v.fps, 'subject_id': v.subject_id,
            'emotion': v.emotion, 'labelled': v.labelled, 'window_start': got['start'].tolist(),
            'window_centre': got['centre'].tolist()}
    if 'label' in got:
      meta.update(centre_label=got['label'].tolist(), segments=got['segments'].tolist())
    files.write_json(feats / f'{v.video_id}.json', meta)
  if skipped:
    logging.info('%d of %d videos were written before: skipped', skipped, len(mine))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('mgjax.extract: every video written')
  index = {'settings': settings, 'videos': {
      v.video_id: {'features': f'features/{v.video_id}.npy', 'meta': f'features/{v.video_id}.json',
                   'windows': len(dense.window_starts(v.num_frames, model.frames, stride, hop))}
      for v in todo}}
  if jax.process_index() == 0:
    files.write_json(root / 'index.json', index)
  return index


def main(argv):
  del argv
  cli.start_processes()
  f = flags.FLAGS
  index = extract(f.checkpoint, f.data_dir, f.out, split=f.split, records_config=f.records, layer=f.layer,
                  pooling=f.pooling, window=f.window, stride=f.stride, hop=f.hop, batch=f.batch,
                  video_ids=f.videos)
  if jax.process_index() == 0:
    n = sum(v['windows'] for v in index['videos'].values())
    print(json.dumps({'out': f.out, 'videos': len(index['videos']), 'windows': n}))


if __name__ == '__main__':
  flags.mark_flags_as_required(['checkpoint', 'data_dir', 'out'])
  cli.run(main)
