"""Fine-tuning: the classifier as pure functions, mixup / cutmix with label smoothing, layer-wise lr
decay, initialisation from pretrained weights, and the loop (same checkpoint guarantees as pretraining).

    train_and_evaluate(config, workdir)
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from mgjax import weights
from mgjax.data import demo
from mgjax.data import finetune as data_lib
from mgjax.data import records
from mgjax.evals import features, metrics as eval_metrics
from mgjax.models import classifier as classifier_lib
from mgjax.models import convert, videomae
from mgjax.train import checkpoint as ckpt
from mgjax.train import loop as pretrain_loop
from mgjax.train import metrics as metrics_lib
from mgjax.train import optim, sharding
from mgjax.train import step as step_lib


@dataclasses.dataclass
class ClassifierFns:
  cfg: videomae.ModelConfig
  num_classes: int
  init_scale: float
  graphdef: nnx.GraphDef
  template: nnx.State

  @classmethod
  def create(cls, cfg, num_classes, init_scale):
    graphdef, template = nnx.split(nnx.eval_shape(
        lambda: classifier_lib.VideoClassifier(cfg, num_classes, init_scale=init_scale, rngs=nnx.Rngs(0))))
    return cls(cfg, num_classes, init_scale, graphdef, template)

  def init(self, seed: int) -> dict:
    m = classifier_lib.VideoClassifier(self.cfg, self.num_classes, init_scale=self.init_scale, rngs=nnx.Rngs(seed))
    return nnx.state(m, nnx.Param).to_pure_dict()

  def module(self, params):
    state = jax.tree.map(lambda x: x, self.template)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)


def mix(video, labels, key, num_classes: int, *, mixup: float, cutmix: float, smoothing: float,
        switch_prob: float = 0.5):
  """timm-style Mixup: per batch, mixup (Beta(mixup)) or cutmix (Beta(cutmix), one box for all frames),
  pairing each clip with the batch reversed; smoothed one-hot targets mixed with the same lambda."""
  off = smoothing / num_classes
  onehot = jax.nn.one_hot(labels, num_classes) * (1 - smoothing) + off
  if mixup <= 0 and cutmix <= 0:
    return video.astype(jnp.float32), onehot
  k1, k2, k3, k4 = jax.random.split(key, 4)
  use_cut = (jax.random.uniform(k1) < switch_prob) if (mixup > 0 and cutmix > 0) else jnp.asarray(cutmix > 0)
  lam_mix = jax.random.beta(k2, max(mixup, 1e-3), max(mixup, 1e-3))
  lam_cut = jax.random.beta(k3, max(cutmix, 1e-3), max(cutmix, 1e-3))
  x = video.astype(jnp.float32)
  other = x[::-1]
  _, _, h, w, _ = x.shape
  ch, cw = (jnp.sqrt(1 - lam_cut) * h).astype(jnp.int32), (jnp.sqrt(1 - lam_cut) * w).astype(jnp.int32)
  cy, cx = jax.random.randint(k4, (2,), 0, jnp.array([h, w]))
  y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
  x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1))[None, None, :, :, None]
  lam_box = 1 - ((y1 - y0) * (x1 - x0)) / (h * w)
  mixed = jnp.where(use_cut, jnp.where(box, other, x), lam_mix * x + (1 - lam_mix) * other)
  lam = jnp.where(use_cut, lam_box, lam_mix)
  return mixed, lam * onehot + (1 - lam) * onehot[::-1]


def make_train_step(fns: ClassifierFns, tx, lr_fn, augment, drop_path: bool):
  """The fine-tuning step: mixup / cutmix with label smoothing on the whole global batch (one lambda,
  each clip paired with the batch reversed, as timm's Mixup), then softmax cross-entropy, accumulated
  over the micro-batches. Mixing before the split keeps accumulation the same update as the full batch."""
  a = augment

  def mix_batch(batch, key):
    video, target = mix(batch['video'], batch['label'], key, fns.num_classes, mixup=a.mixup, cutmix=a.cutmix,
                        smoothing=a.label_smoothing)
    return {'video': video, 'target': target}

  def loss(params, mb, key):
    logits = fns.module(params)(mb['video'], key if drop_path else None)
    return optax.softmax_cross_entropy(logits, mb['target']).mean()

  return step_lib.make_train_step(fns, tx, lr_fn, drop_path=drop_path, loss=loss, batch_fn=mix_batch)


def layer_scales(params: dict, depth: int, decay: float) -> dict:
  """Layer-wise lr decay: patch embedding is layer 0, block i layer i + 1, fc_norm and head depth + 1;
  a layer's lr is scaled by decay ** (depth + 1 - layer)."""
  def scale(path, _):
    p = sharding.path_str(path)
    if 'patch_embed' in p:
      layer = 0
    elif p.startswith('encoder/blocks/'):
      layer = int(p.split('/')[2]) + 1
    else:
      layer = depth + 1
    return decay ** (depth + 1 - layer)
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_updates(scales) -> optax.GradientTransformation:
  return optax.GradientTransformation(
      lambda p: optax.EmptyState(),
      lambda u, s, p=None: (jax.tree.map(lambda x, c: x * c, u, scales), s))


def init_from_pretrained(params: dict, path: str, cfg: videomae.ModelConfig) -> dict:
  """Encoder weights from a pretraining checkpoint, an export, or a fine-tuned model; fc_norm and head
  stay as initialised. The pretraining encoder's final norm has no place under mean pooling (as in the
  official fine-tuning code) and is dropped."""
  w = weights.load(path, frames=cfg.frames, image_size=cfg.image_size)
  if (w.model.size, w.model.patch, w.model.tubelet) != (cfg.size, cfg.patch, cfg.tubelet):
    raise convert.WeightsError(
        f'{path}: a {w.model.size} model (patch {w.model.patch}, tubelet {w.model.tubelet}) cannot initialise '
        f'the {cfg.size} config (patch {cfg.patch}, tubelet {cfg.tubelet}): '
        f'encoder/blocks/0/attn/qkv/kernel is {np.shape(w.params["encoder"]["blocks"][0]["attn"]["qkv"]["kernel"])}'
        f' there, {np.shape(params["encoder"]["blocks"][0]["attn"]["qkv"]["kernel"])} here')
  enc = {k: v for k, v in w.params['encoder'].items() if k != 'norm'}
  flat_new, flat_old = convert.flatten(params), convert.flatten({'encoder': enc})
  missing = sorted(k for k in flat_new if k.startswith('encoder/') and k not in flat_old)
  if missing:
    raise convert.WeightsError(f'{path}: no weights for {missing[:6]}')
  for k, v in flat_old.items():
    if k in flat_new:
      if tuple(np.shape(v)) != tuple(flat_new[k].shape):
        raise convert.WeightsError(f'{path}: {k} is {np.shape(v)} there, {flat_new[k].shape} here')
      flat_new[k] = jnp.asarray(v, flat_new[k].dtype)
  return convert.unflatten(flat_new)


def evaluate_top1(fns: ClassifierFns, params, source, cfg: videomae.ModelConfig, stride: int, limit: int = 0):
  """Single-view (centre window, centre crop) accuracy on a split: the quick check during training."""
  fn = jax.jit(lambda p, v: fns.module(p)(v).argmax(-1))
  n = len(source) if not limit else min(limit, len(source))
  preds, labels = [], []
  for i in range(0, n, 16):
    recs = [source[j] for j in range(i, min(i + 16, n))]
    views = np.concatenate([features.clip_views(r, cfg.frames, stride, 1, cfg.image_size) for r in recs])
    preds.append(np.asarray(fn(params, jnp.asarray(views))))
    labels.extend(int(r['label']) for r in recs)
  preds, labels = np.concatenate(preds), np.asarray(labels)
  return eval_metrics.classification(np.eye(fns.num_classes)[preds], labels, fns.num_classes)


def train_and_evaluate(config, workdir: str) -> dict:
  if not 0 < config.label_fraction <= 1:
    raise ValueError(f'config.label_fraction={config.label_fraction}: the fraction of labelled training '
                     f'clips must be in (0, 1] (1: supervised, less: semi-supervised)')
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(tuple(config.mesh))
  model_cfg = videomae.ModelConfig(**config.model.to_dict())
  data_dir = config.data.data_dir
  if not data_dir:
    data_dir = demo.prepare(workdir, config.demo_sample.to_dict())
  train_src = records.data_source(data_dir, config.data.name, 'train')
  test_src = records.data_source(data_dir, config.data.name, 'test')
  labels = data_lib.read_labels(data_dir, config.data.name, 'train', train_src)
  indices = np.arange(len(train_src))
  if config.label_fraction < 1.0:
    indices = data_lib.labelled_subset(labels, config.label_fraction, config.seed)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, 'labelled_subset.json'), 'w') as f:
        json.dump({'label_fraction': config.label_fraction, 'seed': config.seed, 'indices': indices.tolist(),
                   'classes': sorted(set(labels[indices].tolist()))}, f)
    logging.info('Semi-supervised: %d of %d training clips (%.1f%%), %d classes', len(indices), len(labels),
                 100 * len(indices) / len(labels), len(set(labels[indices].tolist())))
  d = config.data
  if len(d.crop_scale) != 2 or not 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1:
    raise ValueError(f'config.data.crop_scale: want (min, max) area fractions with 0 < min <= max <= 1, '
                     f'got {tuple(d.crop_scale)}')
  icfg = data_lib.FinetuneInputConfig(
      frames=model_cfg.frames, stride=d.stride, image_size=model_cfg.image_size,
      scale=tuple(d.crop_scale), flip=d.flip,
      randaug_n=d.randaug_n, randaug_m=d.randaug_m, erase_prob=d.erase_prob, num_repeats=d.num_repeats,
      class_balanced=d.class_balanced, seed=config.seed, global_batch=config.global_batch, workers=d.workers)

  def make_iter(start_batch: int):
    return iter(data_lib.make_dataset(train_src, indices, labels[indices], icfg, jax.process_index(),
                                      jax.process_count(), start_batch=start_batch))
  steps_per_epoch = max(1, len(indices) * d.num_repeats // config.global_batch)
  total_steps = config.total_steps or int(config.epochs * steps_per_epoch)
  warmup = config.optim.warmup_steps if config.optim.warmup_steps >= 0 else int(
      config.optim.warmup_epochs * steps_per_epoch)

  fns = ClassifierFns.create(model_cfg, config.num_classes, config.head_init_scale)
  o = config.optim
  lr_fn = optim.schedule(base_lr=o.base_lr, min_lr=o.min_lr, global_batch=config.global_batch,
                         warmup_steps=warmup, total_steps=total_steps)
  depth = videomae.SIZES[model_cfg.size].depth
  scales = layer_scales(jax.eval_shape(lambda: fns.init(0)), depth, o.layer_decay)
  tx = optax.chain(optim.make_optimizer(lr_fn, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                                        clip_norm=o.clip_norm), scale_updates(scales))
  abstract, init = step_lib.abstract_state(fns, tx)
  shardings = step_lib.state_shardings(mesh, abstract)
  c = config.checkpoint
  mngr = ckpt.make_manager(workdir, every_steps=c.every_steps, keep=c.keep, keep_period=c.keep_period)
  info_path = os.path.join(workdir, 'run_info.json')
  if mngr.latest_step() is not None:
    state, start, data_iter, input_start = ckpt.restore(mngr, abstract, shardings, make_iter)
    logging.info('Resumed from step %d in %s', start, workdir)
    init_read = (json.load(open(info_path)).get('init_read', config.init) if os.path.exists(info_path)
                 else config.init)
  else:
    init_read = weights.pin(config.init) if config.init else ''
    if init_read != config.init and jax.process_count() > 1:
      # every process reads the step process 0 pinned, even if the workdir saved another one meanwhile
      step = int(multihost_utils.broadcast_one_to_all(np.int32(os.path.basename(init_read))))
      init_read = os.path.join(os.path.dirname(init_read), str(step))
    if init_read != config.init:
      logging.info('Initialising from %s', init_read)

    def init_state(seed):
      params = fns.init(seed)
      if config.init:
        params = init_from_pretrained(params, init_read, model_cfg)
      return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params)}
    if config.init:  # reads files: outside jit, then placed into the shardings
      state = jax.device_put(init_state(config.seed), shardings)
    else:
      state = jax.jit(init_state, static_argnums=0, out_shardings=shardings)(config.seed)
    start, data_iter, input_start = 0, make_iter(0), 0
  logging.info('Fine-tuning %s from %s: %d steps (%d per epoch), warmup %d', model_cfg.size,
               config.init or 'scratch', total_steps, steps_per_epoch, warmup)

  step_fn = make_train_step(fns, tx, lr_fn, config.augment, drop_path=model_cfg.drop_path > 0)
  jitted, bsh = step_lib.jit_train_step(step_fn, mesh, shardings, {'video': 6, 'label': 2})
  writer = metrics_lib.MetricWriter(workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    with open(info_path, 'w') as f:
      json.dump({'git_revision': pretrain_loop.git_revision(), 'mesh': dict(mesh.shape), 'init': config.init,
                 'init_read': init_read, 'total_steps': total_steps, 'train_clips': int(len(indices))}, f,
                indent=2)
  preempt = pretrain_loop._Preemption()  # pylint: disable=protected-access
  base_key = jax.random.key(config.seed)
  history, evals = [], {}
  progress = metrics_lib.Progress(start, total_steps, config.global_batch, config.log_every, writer)

  def nonfinite(done, m):
    return pretrain_loop.NonFiniteLossError(
        f'non-finite loss ({float(m["loss"])}) at step {done}; the update was not applied and nothing '
        f'after the last checkpoint (step {mngr.latest_step()}) was saved.')

  # metrics read while the next step runs
  late = metrics_lib.OneStepLate(metrics_lib.step_recorder(history, writer, progress, nonfinite))
  try:
    for step in range(start, total_steps):
      host = next(data_iter)
      batch = step_lib.to_global(host, config.micro_batches, bsh)
      state, m = jitted(state, batch, jax.random.fold_in(base_key, step))
      done = step + 1
      late.push(done, m)
      stop = preempt.requested
      eval_due = config.eval_every and (done % config.eval_every == 0 or done == total_steps)
      if stop or eval_due or done == total_steps or done % config.checkpoint.every_steps == 0:
        late.flush()
      if eval_due:
        r = evaluate_top1(fns, state['params'], test_src, model_cfg, d.stride, config.eval_limit)
        evals[done] = r['top1']
        writer.scalars(done, {'test_top1': r['top1'], 'test_mean_class_accuracy': r['mean_class_accuracy']})
        logging.info('step %d: test top-1 %.1f%%, mean class accuracy %.1f%% (single view)', done,
                     100 * r['top1'], 100 * r['mean_class_accuracy'])
      if stop:
        ckpt.save(mngr, done, state, data_iter, input_start, force=True)
        mngr.wait_until_finished()
        return {'steps': done, 'losses': history, 'test_top1': evals, 'preempted': True}
      ckpt.save(mngr, done, state, data_iter, input_start, force=done == total_steps)
    mngr.wait_until_finished()
  finally:
    preempt.restore()
    writer.close()
    mngr.close()
  return {'steps': total_steps, 'losses': history, 'test_top1': evals, 'preempted': False}
