"""Fine-tuning: what fine-tuning a classifier gives the trainer (train/trainer.py).

    train_and_evaluate(config, workdir)

The classifier (initialised from pretrained weights or from scratch), softmax cross-entropy of clips
mixed by mixup / cutmix with label smoothing (data/finetune.py), the augmented `clips` input of all or a
class-stratified fraction of the labelled training clips (semi-supervised), and layer-wise lr decay
(train/optim.py, from config.optim.layer_decay).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from mgjax import errors
from mgjax import files
from mgjax import layout
from mgjax import weights
from mgjax.data import finetune as data_lib
from mgjax.data import records
from mgjax.models import convert, functional, videomae
from mgjax.train import step as step_lib
from mgjax.train import trainer


def make_train_step(fns: functional.ModelFns, tx, lr_fn, augment, drop_path: bool):
  """The fine-tuning step: mixup / cutmix with label smoothing on the whole global batch (one lambda,
  each clip paired with the batch reversed, as timm's Mixup), then softmax cross-entropy, accumulated
  over the micro-batches. Mixing before the split keeps accumulation the same update as the full batch."""
  a = augment

  def mix_batch(batch, key):
    video, target = data_lib.mix(batch['video'], batch['label'], key, fns.num_classes, mixup=a.mixup,
                                 cutmix=a.cutmix, smoothing=a.label_smoothing)
    return {'video': video, 'target': target}

  def loss(params, mb, key):
    logits = fns.module(params)(mb['video'], key if drop_path else None)
    return optax.softmax_cross_entropy(logits, mb['target']).mean()

  return step_lib.make_train_step(fns, tx, lr_fn, drop_path=drop_path, loss=loss, batch_fn=mix_batch)


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
  convert.check_fit(convert.shapes(flat_old), convert.shapes({k: v for k, v in flat_new.items()
                                                               if k.startswith('encoder/')}), path,
                    extra_ok=True)
  for k, v in flat_old.items():
    if k in flat_new:
      flat_new[k] = jnp.asarray(v, flat_new[k].dtype)
  return convert.unflatten(flat_new)


def check_config(config):
  """The values fine-tuning checks before it writes anything."""
  if not 0 < config.label_fraction <= 1:
    raise errors.ConfigError(f'config.label_fraction={config.label_fraction}: the fraction of labelled '
                             f'training clips must be in (0, 1] (1: supervised, less: semi-supervised)')
  d = config.data
  if len(d.crop_scale) != 2 or not 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1:
    raise errors.ConfigError(f'config.data.crop_scale: want (min, max) area fractions with 0 < min <= max <= 1, '
                             f'got {tuple(d.crop_scale)}')


def make_task(config, workdir: str, mesh, data_dir: str) -> trainer.Task:
  del mesh
  d = config.data
  model_cfg = videomae.ModelConfig(**config.model.to_dict())
  source = records.data_source(data_dir, d.name, 'train')
  labels = data_lib.read_labels(data_dir, d.name, 'train', source)
  indices = np.arange(len(source))
  if config.label_fraction < 1.0:
    indices = data_lib.labelled_subset(labels, config.label_fraction, config.seed)
    if jax.process_index() == 0:
      files.write_json(layout.run_file(workdir, 'labelled_subset'),
                       {'label_fraction': config.label_fraction, 'seed': config.seed, 'indices': indices.tolist(),
                        'classes': sorted(set(labels[indices].tolist()))})
    logging.info('Semi-supervised: %d of %d training clips (%.1f%%), %d classes', len(indices), len(labels),
                 100 * len(indices) / len(labels), len(set(labels[indices].tolist())))
  icfg = data_lib.FinetuneInputConfig(
      frames=model_cfg.frames, stride=d.stride, image_size=model_cfg.image_size,
      scale=tuple(d.crop_scale), flip=d.flip,
      randaug_n=d.randaug_n, randaug_m=d.randaug_m, erase_prob=d.erase_prob, num_repeats=d.num_repeats,
      class_balanced=d.class_balanced, seed=config.seed, global_batch=config.global_batch,
      micro_batches=config.micro_batches, workers=d.workers)

  def make_iter(start_batch: int):
    return iter(data_lib.make_dataset(source, indices, labels[indices], icfg, jax.process_index(),
                                      jax.process_count(), start_batch=start_batch))

  fns = functional.ModelFns.create(model_cfg, records.num_classes(source), config.head_init_scale)
  init = {'read': None}

  def init_params(seed):
    params = fns.init(seed)
    if config.init:
      init['read'] = layout.pin(config.init)
      logging.info('Initialising from %s', init['read'])
      params = init_from_pretrained(params, init['read'], model_cfg)
    return params

  def run_info():
    read = init['read']
    if read is None:  # resumed: what the first run read
      read = layout.read_run_info(workdir).get('init_read', config.init)
    return {'init': config.init, 'init_read': read, 'num_classes': fns.num_classes,
            'train_clips': int(len(indices))}

  logging.info('Fine-tuning %s from %s', model_cfg.size, config.init or 'scratch')
  return trainer.Task(
      name='Fine-tuning', fns=fns, epoch_size=len(indices), make_iter=make_iter,
      batch_ndims={'video': 6, 'label': 2},
      make_step=lambda tx, lr_fn: make_train_step(fns, tx, lr_fn, config.augment,
                                                  drop_path=model_cfg.drop_path > 0),
      init_params=init_params if config.init else None, run_info=run_info)


def train_and_evaluate(config, workdir: str) -> dict:
  check_config(config)
  return trainer.train_and_evaluate(config, workdir, make_task)
