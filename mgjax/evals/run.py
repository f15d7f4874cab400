r"""Evaluation as a library: frozen-feature tasks and fine-tuned recognition of one checkpoint, written as
results.json + report.md + plots. The binary mgjax/evaluate.py (its flags) calls `evaluate`:

    python -m mgjax.evaluate --config=configs/eval.py --config.checkpoint=PATH --config.data_dir=D --workdir=DIR

The evaluators are the plug-ins of mgjax/evals (common.py has their interface), built from config.evals
(name -> dict(type=..., settings)); --config.tasks picks which of them run. results.json holds one entry
per evaluator run, under its name:
  knn           {k, temperature, top1, top5, mean_class_accuracy, per_class_accuracy{class: acc}}
  linear_probe  {steps, l2, folds, cv_top1{l2: acc}, top1, top5, mean_class_accuracy, per_class_accuracy}
  attentive_probe {steps, queries, heads, wd, folds, cv_top1{wd: acc}, top1, top5, mean_class_accuracy,
                per_class_accuracy} (cross-attention over the frozen tokens; weight decay by subject folds)
                (l2: the penalty chosen by cross-validation on the train split, folds of whole
                subjects; folds and cv_top1 only when config.evals.linear_probe.l2 lists several)
  retrieval     {recall@1, recall@5, recall@10, mAP, queries}
  emotion       {train_videos, test_videos, from_features{accuracy, f1, count},
                 from_gesture_histogram{accuracy, f1, count}}
  recognition   {views, top1, top5, mean_class_accuracy, per_class_accuracy, confusion_png}
  spotting      {hop, stride, train_videos, test_videos, test_segments, f1@0.3, f1@0.5 (each with
                 _interval, precision@, recall@), baseline_f1@0.3, baseline_f1@0.5 (+ _interval),
                 mAP@0.3, mAP@0.5, mAP@0.7, per_class_ap@0.5, detections, baseline, files}
                (whole videos of the pretrain records: mgjax/evals/spotting.py)
An entry that could not run is {"skipped": reason}. Accuracies are fractions in [0, 1]. Beside them:
checkpoint, model, data_dir, pooling (how frozen features pool the tokens: mean or temporal_std). Features
are cached in DIR/features/ and reused by later runs. predictions.npz holds, for knn, linear_probe and
recognition, TASK.pred, TASK.label and TASK.subject_id of every test clip: `python -m mgjax.compare A B`
reads two of them and gives the difference in top-1 with a confidence interval.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from mgjax import errors
from mgjax import files
from mgjax import layout
from mgjax import weights
from mgjax.evals import common, features
from mgjax.models import functional, videomae


def load_model(config, checkpoint: str) -> tuple[functional.ModelFns, dict]:
  """(model functions, parameters) of the checkpoint, or of config.model at random initialisation."""
  if checkpoint == 'random':
    fns = functional.ModelFns.create(videomae.ModelConfig(**config.model.to_dict(), dtype='float32'))
    return fns, fns.init(config.seed)
  w = weights.load(checkpoint)
  fns = functional.ModelFns.create(dataclasses.replace(w.model, dtype='float32', drop_path=0.0),
                                   w.num_classes)
  params = {**fns.init(0), **w.params} if w.encoder_only else w.params
  return fns, jax.tree.map(np.asarray, params)


def predict_fns(fns: functional.ModelFns, pooling: str, layer: int = -1) -> tuple[dict, Callable]:
  """What evaluators call, over this process's devices (a batch split along them, the parameters
  replicated): 'features' (frozen, the tokens of block `layer` pooled by `pooling`) and, for a
  classifier, 'logits'. Also returns put(params), which places the parameters on those devices once."""
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ('batch',))
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch'))

  def on_devices(f):
    g = jax.jit(f, in_shardings=(rep, split), out_shardings=split)
    return lambda params, video: g(params, jax.device_put(np.asarray(video), split))

  out = {'features': on_devices(features.feature_fn(fns, pooling, layer)),
         'tokens': on_devices(features.tokens_fn(fns))}
  if fns.num_classes:
    out['logits'] = on_devices(lambda p, v: fns.module(p)(v))
  return out, lambda params: jax.device_put(params, rep)


def evaluate(config, workdir: str) -> dict:
  files.writable_dir(workdir, '--workdir')
  unknown = sorted(set(config.tasks) - set(config.evals.keys()))
  if unknown:
    raise errors.ConfigError(f'config.tasks: unknown task(s) {unknown}; known: {tuple(config.evals.keys())}')
  checkpoint = config.checkpoint if config.checkpoint == 'random' else layout.pin(config.checkpoint)
  fns, params = load_model(config, checkpoint)
  fingerprint = features.weights_fingerprint(params)
  cfg = fns.cfg
  fn, put = predict_fns(fns, config.pooling)
  params = put(params)
  devices = jax.local_device_count()  # a batch of views splits evenly over them
  read = str(files.absolute(checkpoint)) if checkpoint != 'random' else f'random:{cfg}:{config.seed}'
  key = {'checkpoint': read,
         'data_dir': str(files.absolute(config.data_dir)), 'frames': cfg.frames, 'stride': config.stride,
         'num_clips': config.num_clips, 'size': cfg.image_size, 'pooling': config.pooling,
         'weights': fingerprint}
  clips = common.Clips.from_records(config.data_dir, config.clips_config, frames=cfg.frames,
                                    size=cfg.image_size, stride=config.stride, num_clips=config.num_clips,
                                    batch=-(-config.batch // devices) * devices,
                                    cache_dir=files.path(workdir) / 'features', cache_key=key,
                                    shard_processes=True)
  evaluators = common.build(config.evals, clips, fn, names=list(config.tasks), workdir=workdir)
  results = {'checkpoint': config.checkpoint, 'checkpoint_read': checkpoint, 'weights': fingerprint,
             'model': dataclasses.asdict(cfg), 'data_dir': config.data_dir, 'pooling': config.pooling}
  arrays = {}
  for name, ev in evaluators.items():
    results[name] = ev.evaluate(params)
    if ev.predictions is not None:
      arrays.update({f'{name}.{k}': np.asarray(v) for k, v in zip(('pred', 'label', 'subject_id'),
                                                                   ev.predictions)})
  if jax.process_index() == 0:
    out = files.path(workdir)
    files.write_atomic(out / 'predictions.npz', lambda f: np.savez(f, **arrays), binary=True)
    files.write_json(out / 'results.json', results)
    files.write_atomic(out / 'report.md', lambda f: f.write(report(results)))
  return results


def report(results: dict) -> str:
  rows = ['| task | metric | value |', '|---|---|---|']
  for task, r in results.items():
    if not isinstance(r, dict) or task == 'model':
      continue
    if 'skipped' in r:
      rows.append(f'| {task} | skipped | {r["skipped"]} |')
      continue
    for k, v in r.items():
      if isinstance(v, float):
        rows.append(f'| {task} | {k} | {100 * v:.1f} |' if k not in ('temperature', 'l2', 'wd') else
                    f'| {task} | {k} | {v:g} |')
      elif isinstance(v, dict) and k.startswith('from_'):
        for kk, vv in v.items():
          if isinstance(vv, float):
            rows.append(f'| {task} | {k} {kk} | {100 * vv:.1f} |')
  head = (f'# Evaluation of {results["checkpoint"]}\n\nFrozen features: {results["pooling"]} '
          'pooling. Accuracies in percent.\n\n')
  return head + '\n'.join(rows) + '\n'
