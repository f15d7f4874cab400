"""A model as pure functions of its parameter dict: the one place NNX modules are split and merged.

The NNX module is split once (graphdef + an abstract template state); `module(params)` merges a plain
parameter dict back into a module, inside jit or out, so the train step, the evaluators and the weight
loaders all handle plain pytrees.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
from flax import nnx

from mgjax.models import classifier as classifier_lib
from mgjax.models import videomae


@dataclasses.dataclass
class ModelFns:
  cfg: videomae.ModelConfig
  num_classes: Optional[int]  # the classifier's; None: the pretraining VideoMAE
  init_scale: float
  graphdef: nnx.GraphDef
  template: nnx.State  # abstract parameter state: the structure to merge a parameter dict into

  @classmethod
  def create(cls, cfg: videomae.ModelConfig, num_classes: Optional[int] = None,
             init_scale: float = 0.001) -> 'ModelFns':
    """The pretraining VideoMAE, or with num_classes the classifier (head initialised at init_scale)."""
    fns = cls(cfg, num_classes or None, init_scale, None, None)
    fns.graphdef, fns.template = nnx.split(nnx.eval_shape(lambda: fns.build(0)))
    return fns

  def build(self, seed: int) -> nnx.Module:
    if self.num_classes:
      return classifier_lib.VideoClassifier(self.cfg, self.num_classes, init_scale=self.init_scale,
                                            rngs=nnx.Rngs(seed))
    return videomae.VideoMAE(self.cfg, rngs=nnx.Rngs(seed))

  def init(self, seed: int) -> dict:
    return nnx.state(self.build(seed), nnx.Param).to_pure_dict()

  def abstract_params(self) -> dict:
    """The parameter dict's structure, shapes and dtypes (jax.ShapeDtypeStruct leaves)."""
    return self.template.to_pure_dict()

  def module(self, params: dict) -> nnx.Module:
    state = jax.tree.map(lambda x: x, self.template)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def loss(self, params, video, mask, key=None):
    """The pretraining loss: normalised-pixel MSE of the masked tokens."""
    pred, target = self.module(params)(video, mask, key)
    return videomae.loss_fn(pred, target)
