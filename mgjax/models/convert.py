"""Weight layouts: mgjax parameter dicts <-> the official MCG-NJU state dict <-> transformers VideoMAE.

mgjax names are the official ones with '/' for '.', `scale`/`kernel` for `weight` and Flax layouts:
Linear [out, in] is Dense [in, out]; Conv3d [O, I, kt, kh, kw] is [kt, kh, kw, I, O]. transformers splits
the fused qkv into query / key / value (key has no bias) and renames modules. The q and v biases are
written under their legacy names (`attention.attention.q_bias` / `v_bias`), which every checkpoint on the
Hub uses and which transformers 5.24 renames on load; reading accepts both spellings.
"""

from __future__ import annotations

import re

import jax
import numpy as np

from mgjax import errors

NORMS = ('norm1', 'norm2', 'norm', 'fc_norm')


class WeightsError(errors.UserError, ValueError):
  """Weights that do not fit the model: lists the missing, unexpected and mis-shaped parameters."""


def flatten(tree: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in tree.items():
    path = f'{prefix}/{k}' if prefix else str(k)
    if isinstance(v, dict):
      out.update(flatten(v, path))
    else:
      out[path] = v
  return out


def unflatten(flat: dict) -> dict:
  out: dict = {}
  for path, v in flat.items():
    node = out
    parts = [int(p) if p.isdigit() else p for p in path.split('/')]
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return out


def _official_name(path: str, finetuned: bool) -> str:
  name = path.replace('/', '.').replace('patch_embed.kernel', 'patch_embed.proj.weight').replace(
      'patch_embed.bias', 'patch_embed.proj.bias')
  name = re.sub(r'\.(scale|kernel)$', '.weight', name)
  if finetuned:  # fine-tuned checkpoints drop the encoder. prefix
    name = re.sub(r'^encoder\.', '', name)
  return name


def _to_torch_layout(path: str, x: np.ndarray) -> np.ndarray:
  return _layout(path, x, (4, 3, 0, 1, 2))


def _from_torch_layout(path: str, x: np.ndarray) -> np.ndarray:
  return _layout(path, x, (2, 3, 4, 1, 0))


def _layout(path: str, x: np.ndarray, conv_axes) -> np.ndarray:
  """Flax kernels <-> PyTorch weights: the patch embedding's Conv3d axes permuted by conv_axes, Dense
  kernels transposed, everything else as is."""
  if path.endswith('patch_embed/kernel'):
    return np.ascontiguousarray(x.transpose(conv_axes))
  if path.endswith('kernel'):
    return np.ascontiguousarray(x.T)
  return x


def is_classifier(params: dict) -> bool:
  return 'head' in params and 'fc_norm' in params


def to_official(params: dict) -> dict:
  """mgjax params (pretraining or classifier) -> official state dict of numpy arrays."""
  finetuned = is_classifier(params)
  return {_official_name(p, finetuned): _to_torch_layout(p, np.asarray(x)) for p, x in flatten(params).items()}


def from_official(sd: dict, template: dict, where: str = '') -> dict:
  """Official state dict -> mgjax params shaped like `template` (a param dict or its eval_shape)."""
  sd = _unwrap(sd)
  finetuned = is_classifier(template)
  flat_t = flatten(template)
  names = {_official_name(p, finetuned): p for p in flat_t}
  check_fit(shapes(sd), {n: tuple(_to_torch_layout(p, np.zeros(flat_t[p].shape, np.int8)).shape)
                         for n, p in names.items()}, where)
  return unflatten({p: _from_torch_layout(p, np.asarray(sd[n])).astype(flat_t[p].dtype) for n, p in names.items()})


def _unwrap(sd: dict) -> dict:
  for key in ('model', 'module', 'state_dict'):  # official files wrap the dict; DeepSpeed ones in 'module'
    if key in sd and isinstance(sd[key], dict):
      return sd[key]
  return sd


def _key_name(k) -> str:
  for attr in ('key', 'idx', 'name'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def shapes(tree) -> dict:
  """{'a/b/0/c': shape} of any tree of arrays, abstract arrays or orbax array metadata (a flat dict of
  'a/b' names gives the same names as the nested one)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(_key_name(k) for k in path): tuple(v.shape if hasattr(v, 'shape') else np.shape(v))
          for path, v in leaves}


def check_fit(got: dict, want: dict, where: str = '', *, missing_ok: bool = False, extra_ok: bool = False,
              hint: str = 'another size or kind of checkpoint?'):
  """The one shape check of every reader of weights: `got` {name: shape} (what was read) against `want`
  (what the model needs). Raises WeightsError naming `where` and listing the missing, unexpected and
  mis-shaped names; missing_ok / extra_ok leave those out."""
  missing = [] if missing_ok else sorted(set(want) - set(got))
  unexpected = [] if extra_ok else sorted(set(got) - set(want))
  wrong = sorted(f'{n}: read {got[n]}, model {want[n]}' for n in set(want) & set(got)
                 if tuple(got[n]) != tuple(want[n]))
  if missing or unexpected or wrong:
    lines = []
    for title, items in (('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong)):
      if items:
        lines.append(f'{len(items)} {title}: ' + ', '.join(items[:8]) + (' ...' if len(items) > 8 else ''))
    raise WeightsError((f'{where}: ' if where else '') + f'weights do not fit the model ({hint}): '
                       + '; '.join(lines))


# ---- transformers names --------------------------------------------------------------------------------

_HF_BLOCK = (('norm1.', 'layernorm_before.'), ('norm2.', 'layernorm_after.'),
             ('attn.proj.', 'attention.output.dense.'), ('mlp.fc1.', 'intermediate.dense.'),
             ('mlp.fc2.', 'output.dense.'), ('attn.q_bias', 'attention.attention.q_bias'),
             ('attn.v_bias', 'attention.attention.v_bias'))


def _hf_name(name: str) -> str:
  """Official name (pretraining or fine-tuned layout) -> transformers name (qkv handled by the caller)."""
  for pattern, prefix in ((r'^(?:encoder\.)?blocks\.(\d+)\.(.*)$', 'videomae.encoder.layer'),
                          (r'^decoder\.blocks\.(\d+)\.(.*)$', 'decoder.decoder_layers')):
    m = re.match(pattern, name)
    if m:
      rest = m.group(2)
      for a, b in _HF_BLOCK:
        if rest.startswith(a):
          return f'{prefix}.{m.group(1)}.{b}{rest[len(a):]}'
  name = re.sub(r'^(encoder\.)?patch_embed\.proj\.', 'videomae.embeddings.patch_embeddings.projection.', name)
  name = re.sub(r'^encoder\.norm\.', 'videomae.layernorm.', name)
  return re.sub(r'^head\.', 'classifier.', name)


def to_hf(params: dict) -> dict:
  """mgjax params -> transformers state dict (numpy)."""
  out = {}
  for name, x in to_official(params).items():
    m = re.match(r'^(.*)attn\.qkv\.weight$', name)
    if m:
      base = _hf_name(m.group(1) + 'norm1.weight').rsplit('layernorm_before.weight', 1)[0]
      for part, w in zip(('query', 'key', 'value'), np.split(x, 3, axis=0)):
        out[f'{base}attention.attention.{part}.weight'] = np.ascontiguousarray(w)
    else:
      out[_hf_name(name)] = x
  return out


def from_hf(sd: dict, template: dict, where: str = '') -> dict:
  """transformers state dict (legacy q_bias / v_bias or 5.x query.bias / value.bias) -> mgjax params."""
  sd = {k.replace('attention.attention.query.bias', 'attention.attention.q_bias')
         .replace('attention.attention.value.bias', 'attention.attention.v_bias'): v for k, v in sd.items()}
  official = {}
  hf_of = {}
  for name in to_official_names(template):
    if name.endswith('attn.qkv.weight'):
      base = _hf_name(name[:-len('attn.qkv.weight')] + 'norm1.weight').rsplit('layernorm_before.weight', 1)[0]
      parts = [f'{base}attention.attention.{p}.weight' for p in ('query', 'key', 'value')]
      hf_of[name] = parts
      if all(p in sd for p in parts):
        official[name] = np.concatenate([np.asarray(sd[p]) for p in parts], axis=0)
    else:
      hf_of[name] = [_hf_name(name)]
      if hf_of[name][0] in sd:
        official[name] = sd[hf_of[name][0]]
  names = {p: () for ps in hf_of.values() for p in ps}  # the names here; from_official checks the shapes
  check_fit({k: () for k in sd}, names, where, hint='transformers names')
  return from_official(official, template, where)


def to_official_names(template: dict) -> list:
  finetuned = is_classifier(template)
  return [_official_name(p, finetuned) for p in flatten(template)]
