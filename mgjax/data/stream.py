"""The per-process stream of host batches both input pipelines share.

Global position p of the clip stream -> a clip, a function of p alone; global batch b holds positions
b * per .. (b + 1) * per - 1 (per = global_batch / num_repeats decoded windows, each giving num_repeats
augmented views), and its micro-batch i (gradient accumulation) the i-th of micro_batches consecutive
parts of those. Each process takes its consecutive slice of every micro-batch, so a host batch is
(micro_batches x its slice of each) and the global batches and their micro-batches are the same clips in
the same places for any number of processes; a stream can start at any global batch.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import grain
from absl import flags, logging

from mgjax import errors


class ProcessSlice:
  """This process's j-th element -> its global position: each unit of process_count * per positions (a
  micro-batch) is cut into process_count consecutive slices, so the units are the same whatever the
  number of processes."""

  def __init__(self, per_process: int, process_index: int, process_count: int):
    self.per, self.index, self.count = per_process, process_index, process_count

  def __call__(self, j: int) -> int:
    return (j // self.per) * self.per * self.count + self.index * self.per + j % self.per


def flatten_repeats(batch):
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def batches(clip_fn: Callable[[int], dict], *, global_batch: int, num_repeats: int, process_index: int,
            process_count: int, start_batch: int, workers: int, micro_batches: int = 1,
            prefetch: Optional[int] = None) -> grain.IterDataset:
  """This process's host batches of global_batch / process_count clips from global batch start_batch on:
  micro_batches consecutive parts, the k-th this process's slice of micro-batch k (what step.to_global
  expects).

  clip_fn(position) -> {key: (num_repeats, ...)}: the views of one decoded window. With workers > 0,
  `workers` grain processes prepare them (prefetch: batches buffered per worker); -1 picks the number
  (`auto_workers`), 0 prepares them in this process.
  """
  part = global_batch // (process_count * micro_batches)  # clips of one micro-batch on one process
  if global_batch % (process_count * micro_batches) or part % num_repeats:
    raise errors.ConfigError(
        f'config.global_batch={global_batch} must split into config.micro_batches={micro_batches} '
        f'micro-batches, each over {process_count} processes, and then into groups of '
        f'config.data.num_repeats={num_repeats}')
  per = part // num_repeats  # decoded windows of one micro-batch on one process
  ds = grain.MapDataset.range(start_batch * per * micro_batches, 2**62)
  ds = ds.map(ProcessSlice(per, process_index, process_count)).map(clip_fn)
  ds = ds.batch(per * micro_batches, drop_remainder=True).map(flatten_repeats)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if workers < 0:
    one = clip_fn(0)
    workers = auto_workers(sum(v.nbytes for v in one.values()) * per * micro_batches, prefetch or 2)
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use defaults
      flags.FLAGS.mark_as_parsed()
    options = {} if prefetch is None else {'per_worker_buffer_size': prefetch}
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, **options))
  return it


def auto_workers(batch_bytes: int, prefetch: int) -> int:
  """Worker processes for data.workers=-1: one per core this process may run on, less one for the
  training loop, and no more than half the free memory holds with each worker's `prefetch` batches (and
  the one it is making) of `batch_bytes`."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
  try:
    free = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')
  except (ValueError, OSError):
    free = 8 << 30
  by_memory = int(0.5 * free // max(1, batch_bytes * (prefetch + 1)))
  workers = max(1, min(cores - 1, by_memory))
  logging.info('data.workers=-1: %d worker processes (%d cores, %.1f GB free, %.0f MB a host batch)',
               workers, cores, free / 1e9, batch_bytes / 1e6)
  return workers
