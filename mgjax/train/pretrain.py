"""Pretraining: what VideoMAE pretraining gives the trainer (train/trainer.py).

    train_and_evaluate(config, workdir)

The masked-autoencoder model and its loss, the pretraining input pipeline (windows of the `pretrain`
records with their masks), and pictures of input | masked | reconstruction every viz_every steps.
"""

from __future__ import annotations


import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from mgjax import errors
from mgjax import files
from mgjax import layout
from mgjax.data import pretrain as pipeline
from mgjax.data import records
from mgjax.models import functional
from mgjax.models.videomae import ModelConfig
from mgjax.train import sharding
from mgjax.train import step as step_lib
from mgjax.train import trainer
from mgjax.train import viz


def model_config(config) -> ModelConfig:
  cfg = ModelConfig(**config.model.to_dict())
  if cfg.mask_type not in pipeline.MASK_TYPES:
    raise errors.ConfigError(f'config.model.mask_type: unknown {cfg.mask_type!r}; known: {pipeline.MASK_TYPES}')
  return cfg


def pipeline_config(config, data_dir: str, model_cfg: ModelConfig) -> pipeline.PipelineConfig:
  d = config.data
  return pipeline.PipelineConfig(
      data_dir=data_dir, config=d.name, split=d.split, seed=config.seed, global_batch=config.global_batch,
      micro_batches=config.micro_batches,
      sampling=pipeline.SamplingConfig(frames=model_cfg.frames, stride=d.stride, sampling=d.sampling,
                                       static_motion=d.static_motion, static_keep=d.static_keep),
      augment=pipeline.AugmentConfig(image_size=model_cfg.image_size, scales=tuple(d.scales), flip=d.flip,
                                     num_repeats=d.num_repeats),
      grid=model_cfg.grid, mask_ratio=model_cfg.mask_ratio,
      mask_type=model_cfg.mask_type, decoder_mask_ratio=model_cfg.decoder_mask_ratio,
      num_decoded=model_cfg.num_decoded, workers=d.workers, prefetch=d.prefetch)


def make_task(config, workdir: str, mesh, data_dir: str) -> trainer.Task:
  model_cfg = model_config(config)
  source = records.data_source(data_dir, config.data.name, config.data.split)
  pcfg = pipeline_config(config, data_dir, model_cfg)
  fns = functional.ModelFns.create(model_cfg)

  def make_iter(start_batch: int):
    return iter(pipeline.make_dataset(pcfg, jax.process_index(), jax.process_count(), source=source,
                                      start_batch=start_batch))

  recon = jax.jit(lambda p, v, m: fns.module(p)(v, m)[0], out_shardings=sharding.replicated(mesh))

  def pictures(step, state, host, writer):
    write_reconstruction(workdir, writer, step, recon, state['params'], host, model_cfg, mesh,
                         config.micro_batches)

  return trainer.Task(
      name='Pretraining', fns=fns, epoch_size=len(source), make_iter=make_iter,
      batch_ndims={'video': 6, 'mask': 3},
      make_step=lambda tx, lr_fn: step_lib.make_train_step(fns, tx, lr_fn, drop_path=model_cfg.drop_path > 0),
      hooks=[trainer.Hook(config.viz_every, pictures)])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  return trainer.train_and_evaluate(config, workdir, make_task)


def write_reconstruction(workdir, writer, step, recon, params, host, model_cfg, mesh, micro_batches=1):
  """The first 4 clips of the global batch, the same for any number of processes: input | masked |
  reconstruction, to workdir/reconstructions and TensorBoard. The host batch starts with this process's
  slice of micro-batch 0 (data/stream.py); the slices' first clips, gathered in process order, begin with
  the global batch's first clips."""
  take = min(4, host['video'].shape[0] // micro_batches)
  video, mask = np.asarray(host['video'][:take]), np.asarray(host['mask'][:take]).astype(np.uint8)
  if jax.process_count() > 1:
    video, mask = (np.asarray(x).reshape((-1,) + x.shape[2:])[:4]
                   for x in multihost_utils.process_allgather((video, mask)))
  rep = sharding.replicated(mesh)
  put = lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x))
  mask = np.asarray(mask).astype(host['mask'].dtype)  # bool, or int8 with dual masking
  pred = np.asarray(recon(params, put(video), put(mask)))
  grid = viz.reconstruction_grid(video, mask, pred, model_cfg)
  if jax.process_index() == 0:
    files.write_atomic(layout.run_file(workdir, 'reconstructions') / f'step_{step:07d}.png',
                       lambda f: Image.fromarray(grid).save(f, format='PNG'), binary=True)
  writer.image(step, 'reconstruction', grid)
