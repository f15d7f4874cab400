"""kNN classification on frozen features: cosine similarity, temperature-weighted vote (as DINO)."""

import numpy as np

from mgjax.evals import common, metrics


def scores(train_x, train_y, test_x, num_classes: int, k: int = 20, temperature: float = 0.07) -> np.ndarray:
  sim = metrics.l2_normalize(test_x) @ metrics.l2_normalize(train_x).T
  k = min(k, len(train_x))
  nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
  w = np.exp(np.take_along_axis(sim, nn, axis=1) / temperature)
  out = np.zeros((len(test_x), num_classes))
  np.add.at(out, (np.arange(len(test_x))[:, None], train_y[nn]), w)
  return out


def evaluate(train: dict, test: dict, num_classes: int, k: int = 20, temperature: float = 0.07,
             return_pred: bool = False):
  """The metrics; with return_pred, (metrics, top-1 class per test sample)."""
  s = scores(train['features'], train['label'], test['features'], num_classes, k, temperature)
  out = {'k': k, 'temperature': temperature, **metrics.classification(s, test['label'], num_classes)}
  return (out, s.argmax(1)) if return_pred else out


class Evaluator(common.Evaluator):
  """kNN top-1 etc. of the test clips against the train clips' frozen features."""

  settings = ('temperature',)

  def __init__(self, clips: common.Clips, predict_fns: dict, k: int = 20, temperature: float = 0.07):
    self.clips, self.predict, self.k, self.temperature = clips, predict_fns['features'], k, temperature

  def evaluate(self, params) -> dict:
    f = self.clips.features(self.predict, params)
    out, pred = evaluate(f['train'], f['test'], self.clips.num_classes, self.k, self.temperature,
                         return_pred=True)
    self.predictions = (pred, f['test']['label'], f['test']['subject_id'])
    return out
