"""Where metrics go: the console (absl logging), metrics.jsonl and TensorBoard event files (tensorboardX,
no TensorFlow). Only process 0 writes files."""

from __future__ import annotations

import io
import json

import jax
import numpy as np
from absl import logging
from tensorboardX import record_writer

from mgjax import files
from mgjax import layout


class MetricWriter:
  """metrics.jsonl and TensorBoard events under the workdir. A local workdir gets each line appended as it
  comes. A bucket has no appends: its metrics.jsonl is rewritten whole, and the events written since the
  last flush go to a new object beside the others (`events.out.tfevents.*.NNNNNN`, which TensorBoard reads
  in name order). Both happen at each flush(), which the trainer calls with every checkpoint, so what a
  bucket holds reaches at least the last checkpoint (a resumed run writes the steps after it again);
  events are also flushed every 10 minutes."""

  def __init__(self, workdir):
    self.enabled = jax.process_index() == 0
    self._jsonl = self._tb = None
    if not self.enabled:
      return
    root = files.path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._remote = files.is_remote(root)
    self._path = layout.run_file(workdir, 'metrics')
    logdir = str(layout.run_file(workdir, 'tensorboard'))
    if self._remote:
      self._lines = self._path.read_text().splitlines(keepends=True) if self._path.exists() else []
      self._written = len(self._lines)
      # tensorboardX's own bucket writer would re-upload the whole file at every flush
      self._tb = SummaryWriter(f'{_PARTS}:{logdir}', flush_secs=600)
    else:
      self._jsonl = self._path.open('a')
      self._tb = SummaryWriter(logdir)

  def scalars(self, step: int, values: dict):
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    line = json.dumps({'step': int(step), **values}) + '\n'
    if self._remote:
      self._lines.append(line)
    else:
      self._jsonl.write(line)
      self._jsonl.flush()
    for k, v in values.items():
      self._tb.add_scalar(k, v, step)

  def image(self, step: int, name: str, image: np.ndarray):
    if self.enabled:
      self._tb.add_image(name, image, step, dataformats='HWC')

  def text(self, name: str, text: str):
    if self.enabled:
      self._tb.add_text(name, text, 0)

  def flush(self):
    if not self.enabled:
      return
    self._tb.flush()
    if self._remote and len(self._lines) != self._written:
      files.write_atomic(self._path, lambda f: f.writelines(self._lines))
      self._written = len(self._lines)

  def close(self):
    if self.enabled:
      self.flush()
      self._tb.close()
      if self._jsonl is not None:
        self._jsonl.close()


class _Parts:
  """A TensorBoard event file in a bucket, as the objects PATH.000000, PATH.000001, ...: each flush writes
  the records since the last one (whole records: tensorboardX flushes between them)."""

  def __init__(self, path: str):
    self.path, self.part, self.buffer = path[len(_PARTS) + 1:], 0, io.BytesIO()

  def write(self, data: bytes):
    self.buffer.write(data)

  def flush(self):
    if self.buffer.tell():
      files.path(f'{self.path}.{self.part:06d}').write_bytes(self.buffer.getvalue())
      self.part, self.buffer = self.part + 1, io.BytesIO()

  def close(self):
    self.flush()


class _PartsFactory:

  def open(self, path: str) -> _Parts:
    return _Parts(path)

  def directory_check(self, path: str):
    pass  # buckets have no directories to make


_PARTS = 'mgjax-parts'
record_writer.register_writer_factory(_PARTS, _PartsFactory())


class OneStepLate:
  """Reads each step's metrics while the next step runs, so the host never waits for the device before
  preparing the next batch: push(step, metrics) hands the previous push to `read`; flush() reads the
  last push now (before a checkpoint, an evaluation or the end, so none is saved past a bad step)."""

  def __init__(self, read):
    self._read, self._pending = read, None

  def push(self, step: int, metrics):
    previous, self._pending = self._pending, (step, metrics)
    if previous is not None:
      self._read(*previous)

  def flush(self):
    if self._pending is not None:
      pending, self._pending = self._pending, None
      self._read(*pending)


def step_recorder(history: list, writer: 'MetricWriter', progress: 'Progress', nonfinite_error):
  """The `read` of OneStepLate for a training loop: fetches a step's metrics; raises
  nonfinite_error(step, metrics) when its loss or gradient was not finite (the step's update was not
  applied), else appends the loss to `history`, writes loss, gradient norm and lr, and updates `progress`."""
  def record(done: int, m):
    m = jax.device_get(m)
    if not bool(m['finite']):
      raise nonfinite_error(done, m)
    history.append(float(m['loss']))
    writer.scalars(done, {'loss': m['loss'], 'grad_norm': m['grad_norm'], 'lr': m['lr']})
    progress.update(done, float(m['loss']), float(m['lr']))
  return record


class Progress:
  """The console line every `every` steps (and at the last), with clips/s over the interval and ETA."""

  def __init__(self, start: int, total: int, global_batch: int, every: int, writer: MetricWriter):
    import time  # pylint: disable=g-import-not-at-top
    self._time = time.time
    self.total, self.batch, self.every, self.writer = total, global_batch, every, writer
    self.t_last, self.step_last = self._time(), start

  def update(self, done: int, loss: float, lr: float):
    if done % self.every and done != self.total:
      return
    now = self._time()
    rate = (done - self.step_last) * self.batch / max(now - self.t_last, 1e-9)
    console(done, self.total, loss, lr, rate, (self.total - done) * self.batch / max(rate, 1e-9))
    self.writer.scalars(done, {'clips_per_s': rate})
    self.t_last, self.step_last = now, done


def console(step: int, total: int, loss: float, lr: float, clips_per_s: float, eta_s: float):
  logging.info('step %d/%d  loss %.4f  lr %.3g  %.1f clips/s  ETA %s', step, total, loss, lr, clips_per_s,
               _hms(eta_s))


def _hms(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def read_jsonl(path: str) -> list:
  with files.path(path).open() as f:
    return [json.loads(line) for line in f if line.strip()]
