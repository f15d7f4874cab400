"""The pretraining input pipeline on built sample records: quality-aware sampling, determinism, resume."""

import os

import numpy as np

from mgjax import errors
from mgjax.data import pretrain, records, stream
from mgjax.models import videomae

SPAN_ARGS = dict(frames=8, stride=4)


def _draws(built, truth, sampling, n=400):
  src = records.data_source(built, 'pretrain', 'all')
  sampler = pretrain.WindowSampler(src, pretrain.SamplingConfig(sampling=sampling, **SPAN_ARGS))
  rng = np.random.default_rng(0)
  span = records.window_span(SPAN_ARGS["frames"], SPAN_ARGS["stride"])
  out = []
  for _ in range(n):
    recs, offset = sampler.choose(int(rng.integers(len(src))), rng)
    vid = recs[0]['video_id'].decode()
    start = int(recs[0]['start_frame']) + offset
    v = truth['videos'][vid]
    assert start + span <= v['num_frames']
    crosses_cut = any(start < c <= start + span - 1 for c in v['cuts'])
    static = start + span <= v['static'][1]  # the whole window shows the empty room
    out.append((crosses_cut, static))
  return np.array(out)


def test_quality_sampling_avoids_cuts_and_static_chunks(sample, built):
  _, truth = sample
  quality, uniform = _draws(built, truth, 'quality'), _draws(built, truth, 'uniform')
  assert uniform[:, 0].sum() > 0 and uniform[:, 1].sum() > 0  # the data has both, uniform finds them
  assert quality[:, 0].sum() == 0  # never across a shot cut
  assert quality[:, 1].mean() < 0.5 * uniform[:, 1].mean()  # static chunks down-weighted (keep 0.1)


def _cfg(built, **kw):
  return pretrain.PipelineConfig(
      data_dir=built, split='all', global_batch=8, grid=(2, 2, 2), mask_ratio=0.5,
      sampling=pretrain.SamplingConfig(**SPAN_ARGS), augment=pretrain.AugmentConfig(image_size=32, num_repeats=2),
      **kw)


def test_batches_are_deterministic_and_resume_from_state(built):
  it = iter(pretrain.make_dataset(_cfg(built)))
  first = [next(it) for _ in range(3)]
  assert first[0]['video'].shape == (8, 8, 32, 32, 3) and first[0]['video'].dtype == np.uint8
  assert first[0]['mask'].shape == (8, 8) and (first[0]['mask'].sum(1) == 4).all()
  # Repeated augmentation: clips 2k and 2k+1 are two views of one decoded window.
  assert not np.array_equal(first[0]['video'][0], first[0]['video'][1])
  state = it.get_state()
  nxt = next(it)
  again = iter(pretrain.make_dataset(_cfg(built)))
  for b in first:
    np.testing.assert_array_equal(next(again)['video'], b['video'])
  resumed = iter(pretrain.make_dataset(_cfg(built)))
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)['video'], nxt['video'])
  other = next(iter(pretrain.make_dataset(_cfg(built, seed=1))))
  assert not np.array_equal(other['video'], first[0]['video'])


def test_worker_processes_give_the_same_batches(built):
  """2 workers, and the number data.workers=-1 picks (a core each but one for the loop, half the free
  memory at most), give the batches of the pipeline in this process."""
  cores = len(os.sched_getaffinity(0))
  assert stream.auto_workers(1, 2) == max(1, cores - 1) and stream.auto_workers(1 << 50, 2) == 1
  ref = iter(pretrain.make_dataset(_cfg(built)))
  mps = [iter(pretrain.make_dataset(_cfg(built, workers=w))) for w in (2, -1)]
  try:
    for _ in range(3):
      a = next(ref)
      for mp in mps:
        b = next(mp)
        np.testing.assert_array_equal(a['video'], b['video'])
        np.testing.assert_array_equal(a['mask'], b['mask'])
  finally:
    for mp in mps:
      mp.close()


def test_process_slices_make_up_the_same_global_batch(built):
  whole = iter(pretrain.make_dataset(_cfg(built)))
  parts = [iter(pretrain.make_dataset(_cfg(built), process_index=i, process_count=2)) for i in range(2)]
  for _ in range(2):
    want = next(whole)
    got = [next(p) for p in parts]
    assert got[0]['video'].shape[0] == 4
    np.testing.assert_array_equal(np.concatenate([g['video'] for g in got]), want['video'])
    np.testing.assert_array_equal(np.concatenate([g['mask'] for g in got]), want['mask'])


def test_micro_batches_hold_the_same_clips_for_any_process_count(built):
  """With micro_batches=2, a host batch is (micro-batch 0's slice, micro-batch 1's slice): put together
  over 2 processes, micro-batch k is the same clips as on 1 process, which are the clips of the run
  without micro-batches."""
  plain = iter(pretrain.make_dataset(_cfg(built)))
  whole = iter(pretrain.make_dataset(_cfg(built, micro_batches=2)))
  parts = [iter(pretrain.make_dataset(_cfg(built, micro_batches=2), process_index=i, process_count=2))
           for i in range(2)]
  for _ in range(2):
    want, one = next(plain), next(whole)
    np.testing.assert_array_equal(one['video'], want['video'])
    got = [{k: v.reshape((2, 2) + v.shape[1:]) for k, v in next(p).items()} for p in parts]  # (micro, clip)
    for k in ('video', 'mask'):
      glued = np.concatenate([np.concatenate([g[k][m] for g in got]) for m in range(2)])
      np.testing.assert_array_equal(glued, want[k])
  with np.testing.assert_raises_regex(errors.ConfigError, 'config.micro_batches=4 micro-batches, each over 2 '
                                      'processes, and then into groups of config.data.num_repeats=2'):
    pretrain.make_dataset(_cfg(built, micro_batches=4), process_index=0, process_count=2)


def test_tube_and_random_masks_hide_the_same_number_of_tokens():
  rng = np.random.default_rng(0)
  grid = (4, 7, 7)
  tube = np.stack([pretrain.make_mask(rng, grid, 0.75, 'tube') for _ in range(50)]).reshape(50, 4, 49)
  rand = np.stack([pretrain.make_mask(rng, grid, 0.75, 'random') for _ in range(50)]).reshape(50, 4, 49)
  assert (tube.sum((1, 2)) == 36 * 4).all() and (rand.sum((1, 2)) == 36 * 4).all()
  assert (tube == tube[:, :1]).all()  # tube: the same positions in every time slot
  seen_later = (rand[:, 0] & ~rand[:, 1:].all(1)).sum()  # random: masked in slot 0, visible in another
  assert seen_later > 0
  with np.testing.assert_raises_regex(ValueError, 'unknown mask_type'):
    pretrain.make_mask(rng, grid, 0.75, 'frame')


def test_dual_masks_decode_a_fixed_running_cell_share_of_the_masked_tokens(built):
  """Dual masking: every clip's mask marks the same number of masked tokens for the decoder (1), a
  subset of the encoder's masked tokens, preferring the running cell's positions; the video and the
  encoder's mask are those of the pipeline without it (the draws for the decoder come after)."""
  grid = (8, 14, 14)
  cell = pretrain.running_cell(grid, 0.5, 0).reshape(8, 7, 2, 7, 2)
  assert (cell.sum((2, 4)) == 2).all()  # 2 of every 2 x 2 cell
  np.testing.assert_array_equal(pretrain.running_cell(grid, 0.5, 1)[:196], cell.reshape(8, -1)[1])  # runs on
  num_decoded = videomae.ModelConfig(size='B', decoder_mask_ratio=0.5).num_decoded
  assert num_decoded == 88 * 8  # half of the 176 masked positions of every slot
  rng = np.random.default_rng(0)
  for kind in ('tube', 'random'):
    for _ in range(5):
      mask = pretrain.make_mask(rng, grid, 0.9, kind)
      d = pretrain.dual_mask(rng, mask, grid, 0.5, num_decoded)
      assert d.dtype == np.int8 and set(np.unique(d)) == {0, 1, 2}
      np.testing.assert_array_equal(d == 0, ~mask)
      assert (d == 1).sum() == num_decoded
      if kind == 'tube':
        assert ((d == 1).reshape(8, -1).sum(1) == 88).all()
  # The running cell first: the decoded tokens of a slot are all kept by some running cell, or every
  # masked token a cell keeps is decoded (a 2 x 2 cell pattern shows in the 1s of a half-masked clip).
  d = pretrain.dual_mask(np.random.default_rng(1), np.ones(4 * 4 * 4, bool), (4, 4, 4), 0.5, 32).reshape(4, 2, 2, 2, 2)
  assert ((d == 1).sum((2, 4)) == 2).all() and ((d == 1) == (d == 1)[:, :1, :, :1]).all()
  with np.testing.assert_raises_regex(errors.ConfigError, 'decoder_mask_ratio=1.0'):
    videomae.ModelConfig(size='B', decoder_mask_ratio=1.0)

  plain = next(iter(pretrain.make_dataset(_cfg(built))))
  cfg = _cfg(built, decoder_mask_ratio=0.5, num_decoded=2)
  dual = [next(iter(pretrain.make_dataset(cfg))) for _ in range(2)]
  np.testing.assert_array_equal(dual[0]['mask'], dual[1]['mask'])  # a function of the index
  np.testing.assert_array_equal(dual[0]['video'], plain['video'])
  np.testing.assert_array_equal(dual[0]['mask'] > 0, plain['mask'])
  assert ((dual[0]['mask'] == 1).sum(1) == 2).all()


def test_no_acceptable_window_is_an_error_after_max_tries(built):
  """Every chunk static and none kept: the sampler gives up after MAX_TRIES draws, with what to change."""
  src = records.data_source(built, 'pretrain', 'all')
  everything_static = pretrain.SamplingConfig(static_motion=1e9, static_keep=0.0, **SPAN_ARGS)
  sampler = pretrain.WindowSampler(src, everything_static)
  with np.testing.assert_raises_regex(RuntimeError, f'no acceptable window found in {pretrain.MAX_TRIES} '
                                      'tries.*sampling="uniform" or a lower static_motion'):
    sampler.choose(0, np.random.default_rng(0))
  # Kept with probability static_keep: with 1, the same static chunks are accepted.
  keep = pretrain.WindowSampler(src, pretrain.SamplingConfig(static_motion=1e9, static_keep=1.0, **SPAN_ARGS))
  recs, _ = keep.choose(0, np.random.default_rng(0))
  assert recs
