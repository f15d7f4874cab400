"""Retrieval: each test clip queries the train gallery by cosine similarity; relevant = same class."""

import numpy as np

from mgjax.evals import common, metrics


def evaluate(gallery: dict, queries: dict, ks=(1, 5, 10)) -> dict:
  sim = metrics.l2_normalize(queries['features']) @ metrics.l2_normalize(gallery['features']).T
  order = np.argsort(-sim, axis=1, kind='stable')
  rel = gallery['label'][order] == queries['label'][:, None]  # (Q, G) relevance in rank order
  out = {f'recall@{k}': float(rel[:, :k].any(1).mean()) for k in ks}
  hits = np.cumsum(rel, axis=1)
  precision = hits / np.arange(1, rel.shape[1] + 1)
  n_rel = rel.sum(1)
  ap = np.where(n_rel > 0, (precision * rel).sum(1) / np.maximum(n_rel, 1), 0.0)
  out['mAP'] = float(ap[n_rel > 0].mean()) if (n_rel > 0).any() else 0.0
  out['queries'] = int(len(ap))
  return out


class Evaluator(common.Evaluator):
  """Test clips query the train clips by their frozen features."""

  def __init__(self, clips: common.Clips, predict_fns: dict, ks=(1, 5, 10)):
    self.clips, self.predict, self.ks = clips, predict_fns['features'], tuple(ks)

  def evaluate(self, params) -> dict:
    f = self.clips.features(self.predict, params)
    return evaluate(f['train'], f['test'], self.ks)
