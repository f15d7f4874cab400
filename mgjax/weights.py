"""Weights as a library: reading mgjax checkpoints, exported directories, transformers VideoMAE directories
and official MCG-NJU files, and writing the export formats. No flags: the export binary (mgjax.export),
fine-tuning and evaluation load weights through here.

  hf        DIR/config.json + DIR/model.safetensors: VideoMAEForPreTraining (a pretraining checkpoint) or
            VideoMAEForVideoClassification (a classifier, id2label the micro-gesture names);
            DIR/encoder/ the same for VideoMAEModel; preprocessor_config.json in both.
  official  DIR/model.safetensors with the MCG-NJU keys (and DIR/model.pth, {'model': state_dict}, when
            torch is installed).
  orbax     DIR/encoder: a parameters-only orbax checkpoint of the encoder.
Each also writes DIR/mgjax_model.json (the model config), so the directory imports back exactly.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Optional

import jax
import numpy as np

from mgjax import files
from mgjax import layout
from mgjax.models import convert
from mgjax.models import functional
from mgjax.models import videomae

MODEL_JSON = 'mgjax_model.json'


@dataclasses.dataclass
class Weights:
  params: dict
  model: videomae.ModelConfig
  num_classes: Optional[int] = None  # a classifier's; None for a pretraining model
  encoder_only: bool = False


# ---- templates ------------------------------------------------------------------------------------------

def template(model: videomae.ModelConfig, num_classes: Optional[int] = None) -> dict:
  """Abstract parameter dict of the pretraining model, or of the classifier when num_classes is set."""
  return functional.ModelFns.create(model, num_classes).abstract_params()


# ---- reading mgjax checkpoints ----------------------------------------------------------------------------

def restore_numpy(directory: str, key: Optional[str] = None):
  """An orbax PyTree checkpoint (or its entry `key` alone) as numpy arrays on this host.

  Without a target, orbax would rebuild each array with the sharding it was saved with, which names the
  saving run's devices: a process of another run (fine-tuning on several hosts) may not have them.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(directory)
  meta = getattr(meta, 'item_metadata', meta)
  meta = getattr(meta, 'tree', meta)
  meta = {key: meta[key]} if key else meta
  item = jax.tree.map(lambda _: np.zeros((), np.float32), meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  restored = ckptr.restore(directory, args=ocp.args.PyTreeRestore(item=item, restore_args=args,
                                                                   partial_restore=bool(key)))
  return restored[key] if key else restored


def load_mgjax_checkpoint(path: str) -> Weights:
  """A workdir (its latest complete step) or one step directory, with the model it holds."""
  ckpt = layout.resolve(path)
  model, num_classes = layout.model_of(ckpt)
  params = _normalize(restore_numpy(ckpt.path / 'state', 'params'))
  convert.check_fit(convert.shapes(params), convert.shapes(template(model, num_classes)), str(ckpt.path))
  return Weights(params, model, num_classes)


def _normalize(tree) -> dict:
  """numpy leaves, and list indices as ints (orbax stores the keys of blocks.{i} as strings)."""
  return convert.unflatten({k: np.asarray(v) for k, v in convert.flatten(tree).items()})


# ---- exported directories -------------------------------------------------------------------------------

def _write_model_json(out, w: Weights, fmt: str):
  files.write_json(out / MODEL_JSON, {'format': fmt, 'model': dataclasses.asdict(w.model),
                                      'num_classes': w.num_classes, 'encoder_only': w.encoder_only})


def hf_config(model: videomae.ModelConfig, num_classes: Optional[int]) -> dict:
  s = videomae.SIZES[model.size]
  dim, depth, heads = s.dim, s.depth, s.heads
  ddim, dheads, ddepth = model.decoder
  c = {'model_type': 'videomae',
       'architectures': ['VideoMAEForVideoClassification' if num_classes else 'VideoMAEForPreTraining'],
       'image_size': model.image_size, 'patch_size': model.patch, 'num_channels': 3,
       'num_frames': model.frames, 'tubelet_size': model.tubelet, 'hidden_size': dim,
       'num_hidden_layers': depth, 'num_attention_heads': heads, 'intermediate_size': 4 * dim,
       'hidden_act': 'gelu', 'hidden_dropout_prob': 0.0, 'attention_probs_dropout_prob': 0.0,
       'initializer_range': 0.02, 'layer_norm_eps': 1e-6, 'qkv_bias': True,
       'use_mean_pooling': bool(num_classes), 'decoder_num_attention_heads': dheads,
       'decoder_hidden_size': ddim, 'decoder_num_hidden_layers': ddepth, 'decoder_intermediate_size': 4 * ddim,
       'norm_pix_loss': True, 'torch_dtype': 'float32'}
  if num_classes:
    names = class_names()
    names = names if num_classes == len(names) else [f'C{i + 1}' for i in range(num_classes)]
    c['id2label'] = {str(i): name for i, name in enumerate(names)}
    c['label2id'] = {v: int(k) for k, v in c['id2label'].items()}
  return c


def class_names() -> list:
  """The 32 iMiGUE micro-gesture names, by label index (tfds_imigue3k/classes.tsv; read as a file, so
  neither TFDS nor the builder is imported)."""
  import csv  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  where = importlib.util.find_spec('tfds_imigue3k').submodule_search_locations[0]
  with open(os.path.join(where, 'classes.tsv'), encoding='utf-8-sig') as f:
    return [r['name'] for r in csv.DictReader(f, delimiter='\t')]


def preprocessor_config(model: videomae.ModelConfig) -> dict:
  """transformers' VideoMAEImageProcessor for the model's frames: the short side resized to the frame
  size, a centre crop of it, scaled to [0, 1] and ImageNet-normalised, as mgjax's evaluation reads clips."""
  s = model.image_size
  return {'image_processor_type': 'VideoMAEImageProcessor', 'do_resize': True, 'size': {'shortest_edge': s},
          'resample': 2, 'do_center_crop': True, 'crop_size': {'height': s, 'width': s}, 'do_rescale': True,
          'rescale_factor': 1 / 255, 'do_normalize': True, 'image_mean': [float(x) for x in videomae.IMAGENET_MEAN],
          'image_std': [float(x) for x in videomae.IMAGENET_STD]}


def _save_safetensors(sd: dict, path):
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()})
  files.write_atomic(path, lambda f: f.write(data), binary=True)


def write(w: Weights, fmt: str, out: str):
  """The weights as `fmt` into the directory `out` (local or in a bucket)."""
  out = files.absolute(out)
  out.mkdir(parents=True, exist_ok=True)
  if fmt == 'hf':
    if w.encoder_only:
      raise ValueError('an encoder-only checkpoint cannot be written as a full transformers model')
    sd = convert.to_hf(w.params)
    files.write_json(out / 'config.json', hf_config(w.model, w.num_classes))
    _save_safetensors(sd, out / 'model.safetensors')
    for d in (out, out / 'encoder'):
      files.write_json(d / 'preprocessor_config.json', preprocessor_config(w.model))
    enc_cfg = hf_config(w.model, w.num_classes)  # what VideoMAEModel loads with no unexpected keys
    enc_cfg['architectures'] = ['VideoMAEModel']
    files.write_json(out / 'encoder' / 'config.json', enc_cfg)
    _save_safetensors({k[len('videomae.'):]: v for k, v in sd.items() if k.startswith('videomae.')},
                      out / 'encoder' / 'model.safetensors')
  elif fmt == 'official':
    sd = convert.to_official(w.params)
    _save_safetensors(sd, out / 'model.safetensors')
    try:
      import torch  # pylint: disable=g-import-not-at-top
      state = {'model': {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()}}
      files.write_atomic(out / 'model.pth', lambda f: torch.save(state, f), binary=True)
    except ImportError:
      pass
  elif fmt == 'orbax':
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    enc = w.params['encoder']
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(out / 'encoder', enc, force=True)
    w = dataclasses.replace(w, params={'encoder': enc}, encoder_only=True)
  else:
    raise ValueError(f'unknown format {fmt!r}: hf, official or orbax')
  _write_model_json(out, w, fmt)


def _read_safetensors(path) -> dict:
  from safetensors.numpy import load  # pylint: disable=g-import-not-at-top
  return load(files.path(path).read_bytes())


def _size_of(dim: int, depth: int, where: str) -> str:
  for name, s in videomae.SIZES.items():
    if s.dim == dim and s.depth == depth:
      return name
  raise convert.WeightsError(f'{where}: no model size has width {dim} and depth {depth} '
                             f'(known: { {k: (v.dim, v.depth) for k, v in videomae.SIZES.items()} })')


def _decoder_width(size: str, width: Optional[int], where: str) -> Optional[int]:
  """None for the size's own decoder width (or none stored), else the width, checked."""
  if width is None or width == videomae.SIZES[size].decoder_dim:
    return None
  try:
    return videomae.ModelConfig(size=size, decoder_width=int(width)).decoder_width
  except ValueError as e:
    raise convert.WeightsError(f'{where}: {e}') from None


def _load_foreign_hf(path: str) -> Weights:
  """A transformers VideoMAE directory that mgjax did not write (e.g. one from the Hub)."""
  c = files.read_json(files.path(path) / 'config.json')
  size = _size_of(c['hidden_size'], c['num_hidden_layers'], path)
  model = videomae.ModelConfig(size=size, frames=c.get('num_frames', 16), image_size=c.get('image_size', 224),
                               patch=c.get('patch_size', 16), tubelet=c.get('tubelet_size', 2),
                               decoder_depth=c.get('decoder_num_hidden_layers'),
                               decoder_width=_decoder_width(size, c.get('decoder_hidden_size'), path))
  if c.get('decoder_num_attention_heads', model.decoder[1]) != model.decoder[1]:
    raise convert.WeightsError(
        f"{path}: decoder_num_attention_heads {c['decoder_num_attention_heads']}, but mgjax's {size} decoder "
        f"of width {model.decoder[0]} has {model.decoder[1]} heads")
  classifier = any('Classification' in a for a in c.get('architectures', []))
  num_classes = len(c.get('id2label', {})) or c.get('num_labels') if classifier else None
  found = [f for f in ('model.safetensors', 'pytorch_model.bin') if (files.path(path) / f).exists()]
  if not found:
    raise layout.CheckpointError(f'{path}: no model.safetensors or pytorch_model.bin')
  sd = _read_state_dict(files.path(path) / found[0])
  if not classifier and not any(k.startswith('decoder.') for k in sd):  # a VideoMAEModel: encoder only
    sd = {k if k.startswith('videomae.') else 'videomae.' + k: v for k, v in sd.items()}
    tmpl = {'encoder': template(model)['encoder']}
    names = set(convert.to_hf(jax.tree.map(lambda x: np.zeros(x.shape, np.float32), tmpl)))
    params = convert.from_hf({k: v for k, v in sd.items() if k in names}, tmpl, path)
    return Weights(params, model, None, encoder_only=True)
  return Weights(convert.from_hf(sd, template(model, num_classes), path), model, num_classes)


def _read_state_dict(path) -> dict:
  if str(path).endswith('.safetensors'):
    return _read_safetensors(path)
  import torch  # pylint: disable=g-import-not-at-top
  sd = torch.load(io.BytesIO(files.path(path).read_bytes()), map_location='cpu', weights_only=True)
  sd = convert._unwrap(sd)  # pylint: disable=protected-access
  return {k: v.float().numpy() for k, v in sd.items()}


def _load_official_file(path: str, frames: int = 16, image_size: int = 224) -> Weights:
  """An official MCG-NJU checkpoint file (.pth / .safetensors; pretraining or fine-tuned layout). Frames
  and image size are not stored in it (no position table): they come from the caller."""
  sd = convert._unwrap(_read_state_dict(path))  # pylint: disable=protected-access
  finetuned = 'head.weight' in sd
  pre = '' if finetuned else 'encoder.'
  w = sd[f'{pre}patch_embed.proj.weight']
  depth = len({k.split('.')[1 + (not finetuned)] for k in sd if k.startswith(f'{pre}blocks.')})
  ddepth = len({k.split('.')[2] for k in sd if k.startswith('decoder.blocks.')}) or None
  size = _size_of(w.shape[0], depth, path)
  dwidth = _decoder_width(size, sd['mask_token'].shape[-1], path) if 'mask_token' in sd else None
  model = videomae.ModelConfig(size=size, frames=frames, image_size=image_size, patch=w.shape[-1],
                               tubelet=w.shape[2], decoder_depth=ddepth, decoder_width=dwidth)
  num_classes = sd['head.weight'].shape[0] if finetuned else None
  return Weights(convert.from_official(sd, template(model, num_classes), str(path)), model, num_classes)


def load(path: str, frames: int = 16, image_size: int = 224) -> Weights:
  """Weights from an mgjax workdir or checkpoint, a directory `write` made, a transformers VideoMAE
  directory, or an official checkpoint file (whose frames and image size the caller gives)."""
  root = files.path(path)
  if root.is_file():
    return _load_official_file(path, frames, image_size)
  meta_path = root / MODEL_JSON
  meta = files.read_json(meta_path)
  if meta is None:
    if not (layout.is_workdir(root) or layout.is_step_dir(root)) and (root / 'config.json').exists():
      return _load_foreign_hf(path)
    return load_mgjax_checkpoint(path)
  model = videomae.ModelConfig(**meta['model'])
  num_classes = meta.get('num_classes')
  tmpl = template(model, num_classes)
  encoder_only = bool(meta.get('encoder_only'))
  if encoder_only:
    tmpl = {'encoder': tmpl['encoder']}
  if meta['format'] == 'hf':
    params = convert.from_hf(_read_safetensors(root / 'model.safetensors'), tmpl, str(root))
  elif meta['format'] == 'official':
    params = convert.from_official(_read_safetensors(root / 'model.safetensors'), tmpl, str(root))
  elif meta['format'] == 'orbax':
    params = {'encoder': _normalize(restore_numpy(files.absolute(path) / 'encoder'))}
    convert.check_fit(convert.shapes(params), convert.shapes(tmpl), str(path))
  else:
    raise layout.CheckpointError(f'{meta_path}: unknown format {meta["format"]!r}')
  return Weights(params, model, num_classes, encoder_only=encoder_only)
