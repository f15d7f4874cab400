r"""Evaluation binary: frozen-feature tasks and fine-tuned recognition, results.json + report.md + plots.

    python -m mgjax.evaluate --config=configs/eval.py --config.checkpoint=PATH --config.data_dir=D --workdir=DIR

results.json holds one entry per task that was asked for:
  knn           {k, temperature, top1, top5, mean_class_accuracy, per_class_accuracy{class: acc}}
  linear_probe  {steps, l2, folds, cv_top1{l2: acc}, top1, top5, mean_class_accuracy, per_class_accuracy}
                (l2: the penalty chosen by cross-validation on the train split, folds of whole
                subjects; folds and cv_top1 only when config.linear_probe.l2 lists several)
  retrieval     {recall@1, recall@5, recall@10, mAP, queries}
  emotion       {train_videos, test_videos, from_features{accuracy, f1, count},
                 from_gesture_histogram{accuracy, f1, count}}
  recognition   {views, top1, top5, mean_class_accuracy, per_class_accuracy, confusion_png}
An entry that could not run is {"skipped": reason}. Accuracies are fractions in [0, 1]. Beside them:
checkpoint, model, data_dir, pooling (how frozen features pool the tokens: mean or temporal_std). Features
are cached in DIR/features/ and reused by later runs. predictions.npz holds, for knn, linear_probe and
recognition, TASK.pred, TASK.label and TASK.subject_id of every test clip: `python -m mgjax.compare A B`
reads two of them and gives the difference in top-1 with a confidence interval.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags
from PIL import Image

from mgjax import config as config_lib
from mgjax import weights
from mgjax.data import records
from mgjax.evals import emotion, features, knn, linear_probe, metrics, retrieval
from mgjax.models import classifier as classifier_lib
from mgjax.models import videomae

NUM_CLASSES = 32
TASKS = ('knn', 'linear_probe', 'retrieval', 'emotion', 'recognition')

flags.DEFINE_string('workdir', None, 'Where results.json, report.md, plots and the feature cache go.')
config_flags.DEFINE_config_file('config', None, 'Evaluation config.', lock_config=True)


def load_model(config, checkpoint: str):
  """(module, model config, num_classes or None for a pretraining model): the checkpoint, or random."""
  if checkpoint == 'random':
    cfg = videomae.ModelConfig(**config.model.to_dict(), dtype='float32')
    return videomae.VideoMAE(cfg, rngs=nnx.Rngs(config.seed)), cfg, None
  w = weights.load(checkpoint)
  cfg = dataclasses.replace(w.model, dtype='float32', drop_path=0.0)
  if w.num_classes:
    module = classifier_lib.VideoClassifier(cfg, w.num_classes, rngs=nnx.Rngs(0))
  else:
    module = videomae.VideoMAE(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(module)
  params = w.params if not w.encoder_only else {**nnx.state(module, nnx.Param).to_pure_dict(), **w.params}
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state), cfg, w.num_classes


def _protocol(data_dir: str, config_name: str) -> dict:
  import glob  # pylint: disable=g-import-not-at-top
  found = sorted(glob.glob(os.path.join(data_dir, 'imigue3k', config_name, '*', 'protocol.json')))
  return json.load(open(found[-1])) if found else {}


def recognition(module, cfg, source, config, workdir) -> tuple[dict, tuple]:
  """Multi-view test, as VideoMAE's: test_clips temporal windows spread over the segment x test_crops
  crops along the long side of the short-side-resized frames (left, centre, right), softmax averaged.
  Returns (metrics, (predicted class, label, subject id) per test clip)."""
  fn = jax.jit(lambda v: jax.nn.softmax(module(v), axis=-1))
  probs, labels, subjects = [], [], []
  for i in features.progress(len(source), 'recognition'):
    r = source[i]
    subjects.append(int(r['subject_id']))
    views = features.clip_views(r, cfg.frames, config.stride, config.test_clips, cfg.image_size,
                                config.test_crops)
    probs.append(np.asarray(fn(jnp.asarray(views))).mean(0))
    labels.append(int(r['label']))
  probs, labels = np.stack(probs), np.asarray(labels)
  out = {'views': config.test_clips * config.test_crops,
         **metrics.classification(probs, labels, NUM_CLASSES)}
  conf = metrics.confusion(probs.argmax(1), labels, NUM_CLASSES)
  path = os.path.join(workdir, 'confusion.png')
  _heatmap(conf).save(path)
  out['confusion_png'] = os.path.basename(path)
  return out, (probs.argmax(1), labels, np.asarray(subjects))


def _heatmap(m: np.ndarray, cell: int = 12) -> Image.Image:
  rows = m / np.maximum(m.sum(1, keepdims=True), 1)
  img = (255 * (1 - rows)).astype(np.uint8)
  img = np.kron(img, np.ones((cell, cell), np.uint8))
  return Image.fromarray(img).convert('RGB')


def evaluate(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  tasks = [t for t in config.tasks]
  unknown = sorted(set(tasks) - set(TASKS))
  if unknown:
    raise ValueError(f'unknown task(s) {unknown}; known: {TASKS}')
  checkpoint = config.checkpoint if config.checkpoint == 'random' else weights.pin(config.checkpoint)
  module, cfg, num_classes = load_model(config, checkpoint)
  fingerprint = features.weights_fingerprint(module)
  train_src = records.data_source(config.data_dir, config.clips_config, 'train')
  test_src = records.data_source(config.data_dir, config.clips_config, 'test')
  if config.pooling not in features.POOLINGS:
    raise ValueError(f'config.pooling: unknown pooling {config.pooling!r}; known: {features.POOLINGS}')
  results = {'checkpoint': config.checkpoint, 'checkpoint_read': checkpoint, 'weights': fingerprint,
             'model': dataclasses.asdict(cfg), 'data_dir': config.data_dir, 'pooling': config.pooling}
  preds = {}  # task -> (predicted class, label, subject id) per test clip
  frozen = [t for t in tasks if t != 'recognition']
  if frozen:
    fn = features.encoder_feature_fn(module, pretraining=num_classes is None, pooling=config.pooling)
    key = {'checkpoint': os.path.abspath(checkpoint) if checkpoint != 'random' else
           f'random:{cfg}:{config.seed}', 'data_dir': os.path.abspath(config.data_dir),
           'frames': cfg.frames, 'stride': config.stride, 'num_clips': config.num_clips, 'size': cfg.image_size,
           'pooling': config.pooling, 'weights': fingerprint}
    feats = {}
    for split, src in (('train', train_src), ('test', test_src)):
      feats[split] = features.cached(
          os.path.join(workdir, 'features'), {**key, 'split': split},
          lambda src=src, split=split: features.extract(fn, src, frames=cfg.frames, stride=config.stride,
                                                        num_clips=config.num_clips, size=cfg.image_size,
                                                        batch=config.batch, desc=f'{split} features'))
    test = feats['test']
    if 'knn' in tasks:
      results['knn'], pred = knn.evaluate(feats['train'], test, NUM_CLASSES, **config.knn.to_dict(),
                                          return_pred=True)
      preds['knn'] = (pred, test['label'], test['subject_id'])
    if 'linear_probe' in tasks:
      results['linear_probe'], pred = linear_probe.evaluate(feats['train'], test, NUM_CLASSES,
                                                            **config.linear_probe.to_dict(), return_pred=True)
      preds['linear_probe'] = (pred, test['label'], test['subject_id'])
    if 'retrieval' in tasks:
      results['retrieval'] = retrieval.evaluate(feats['train'], feats['test'])
    if 'emotion' in tasks:
      proto = _protocol(config.data_dir, config.clips_config).get('emotion', {})
      both = {k: np.concatenate([feats['train'][k], feats['test'][k]]) for k in feats['train']}
      results['emotion'] = emotion.evaluate(both, proto.get('train_video_ids', []),
                                            proto.get('test_video_ids', []), feats['train'], NUM_CLASSES)
  if 'recognition' in tasks:
    if num_classes:
      results['recognition'], preds['recognition'] = recognition(module, cfg, test_src, config, workdir)
    else:
      results['recognition'] = {'skipped': 'recognition needs a fine-tuned (classifier) checkpoint'}
  arrays = {f'{task}.{name}': np.asarray(v) for task, p in preds.items()
            for name, v in zip(('pred', 'label', 'subject_id'), p)}
  _write_atomic(os.path.join(workdir, 'predictions.npz'), lambda f: np.savez(f, **arrays), binary=True)
  _write_atomic(os.path.join(workdir, 'results.json'), lambda f: json.dump(results, f, indent=2))
  _write_atomic(os.path.join(workdir, 'report.md'), lambda f: f.write(report(results)))
  return results


def _write_atomic(path: str, write, binary: bool = False):
  """A file is either its old self or complete: written beside it, then renamed over it."""
  tmp = path + '.tmp'
  with open(tmp, 'wb' if binary else 'w') as f:
    write(f)
  os.replace(tmp, path)


def report(results: dict) -> str:
  rows = ['| task | metric | value |', '|---|---|---|']
  for task in TASKS:
    r = results.get(task)
    if r is None:
      continue
    if 'skipped' in r:
      rows.append(f'| {task} | skipped | {r["skipped"]} |')
      continue
    for k, v in r.items():
      if isinstance(v, float):
        rows.append(f'| {task} | {k} | {100 * v:.1f} |' if k not in ('temperature', 'l2') else
                    f'| {task} | {k} | {v:g} |')
      elif isinstance(v, dict) and k.startswith('from_'):
        for kk, vv in v.items():
          if isinstance(vv, float):
            rows.append(f'| {task} | {k} {kk} | {100 * vv:.1f} |')
  head = (f'# Evaluation of {results["checkpoint"]}\n\nFrozen features: {results["pooling"]} '
          'pooling. Accuracies in percent.\n\n')
  return head + '\n'.join(rows) + '\n'


def main(argv):
  del argv
  results = evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  logging.info('results: %s', json.dumps({k: {kk: vv for kk, vv in v.items() if not isinstance(vv, dict)}
                                           for k, v in results.items() if isinstance(v, dict) and k in TASKS}))
  print(report(results))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=config_lib.parse_flags)
