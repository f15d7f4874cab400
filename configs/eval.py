r"""Evaluation of a checkpoint on the iMiGUE-3K tasks.

    python -m mgjax.evaluate --config=configs/eval.py --config.checkpoint=PATH --config.data_dir=D --workdir=DIR

PATH: an mgjax workdir or checkpoint (pretraining or fine-tuned), or an exported directory; `random`
evaluates the model of --config.model at random initialisation (the baseline). Tasks: knn, linear_probe,
retrieval, emotion on frozen features; recognition needs a fine-tuned (classifier) checkpoint; spotting
reads whole videos from the pretrain records in the same data_dir (builder version 1.1.0 on).
--config.pooling=temporal_std reads frozen features as what changes over the clip instead of VideoMAE's
mean over tokens (docs/representation_study.md: on the sample's gestures it is the readout that shows
what pretraining learned); --config.pooling=temporal_std_grid keeps that change per spatial position
(positions x width numbers per clip: for small models).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoint = ''
  c.data_dir = ''  # where the `clips` records are (a demo workdir's demo_data/records works)
  c.clips_config = 'clips'
  # which of c.evals run
  c.tasks = ('knn', 'linear_probe', 'attentive_probe', 'retrieval', 'emotion', 'recognition', 'spotting')
  c.model = dict(size='XS', frames=8, image_size=64, patch=16, tubelet=2, decoder_depth=2, mask_ratio=0.75)
  c.seed = 0
  c.stride = 4
  c.pooling = 'mean'  # frozen features: 'mean' over tokens (VideoMAE), 'temporal_std' (what moves), 'temporal_std_grid'
  c.num_clips = 2  # temporal windows per clip for frozen features
  c.batch = 16
  c.evals = dict(
      knn=dict(type='knn', k=20, temperature=0.07),
      # L2 penalty: with several, cross-validation on the train split (folds of whole subjects) picks one
      linear_probe=dict(type='linear_probe', steps=500, lr=1e-2, l2=(1e-4, 1e-3, 1e-2, 1e-1), folds=3),
      # cross-attention of learned queries over the frozen tokens; weight decay by subject folds as above
      attentive_probe=dict(type='attentive_probe', steps=300, lr=1e-3, wd=(1e-2, 1e-1, 1.0, 10.0), folds=3, heads=4,
                           queries=1, batch=64),
      retrieval=dict(type='retrieval'),
      emotion=dict(type='emotion'),
      # temporal windows x spatial crops, softmax averaged
      recognition=dict(type='recognition', test_clips=3, test_crops=3),
      # whole videos (the pretrain records): a temporal head on windows every `hop` frames
      spotting=dict(type='spotting', hop=8, layers=2, width=128, kernel=5, steps=400, lr=1e-3, crop=64))
  return c.lock()
