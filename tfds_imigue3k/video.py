"""Build-time video work: probe a source video, decode it once, resize, JPEG-encode, score quality.

Only PyAV (FFmpeg) and Pillow; no TensorFlow. Frame i is the i-th frame the decoder returns, which is how
iMiGUE's start_frame / end_frame count.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Iterator, Optional

import av
import numpy as np
from PIL import Image

# Quality scores on a 64-pixel-wide grey thumbnail, from the change d = frame t - frame t-1 after removing
# its median (a global brightness change: flicker, auto-exposure). Motion energy is the mean |d| over the
# pixels that changed by more than NOISE_FLOOR, so sensor noise and compression do not count as motion.
# A shot cut is declared between t-1 and t when mean |d| is large in itself and many times the recent
# level (fast gestures are local; a cut changes the whole picture). Measured on the sample videos: cuts
# 0.06 to 0.13, everything else under 0.021.
THUMB_WIDTH = 64
NOISE_FLOOR = 6 / 255
CUT_MAD = 0.04
CUT_MAD_RATIO = 8.0
CUT_MIN_BASELINE = 0.003


class VideoError(Exception):
  """A source video that cannot be used; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  num_frames: int
  fps: float
  width: int
  height: int


def probe(path: str) -> VideoInfo:
  """Opens `path`, counts its frames by demuxing and decodes its first and last frames.

  Raises VideoError for a file FFmpeg cannot open, one without a video stream, a truncated file (fewer
  frames than its header or duration promises) or one whose frames do not decode.
  """
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError('no video stream')
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or 0)
      if fps <= 0:
        raise VideoError('unknown frame rate')
      header_frames = stream.frames
      duration = float(stream.duration * stream.time_base) if stream.duration else (
          container.duration / 1e6 if container.duration else 0.0)
      packets = sum(1 for p in container.demux(stream) if p.size)
  except av.FFmpegError as e:
    raise VideoError(f'unreadable by FFmpeg: {e}') from e
  if packets == 0:
    raise VideoError('no video frames')
  if header_frames and packets < header_frames:
    raise VideoError(f'truncated: header says {header_frames} frames, only {packets} present')
  if not header_frames and duration and packets < duration * fps - 2:
    raise VideoError(f'truncated: duration {duration:.2f}s promises {duration * fps:.0f} frames, '
                     f'only {packets} present')
  # Decode the last frame too (the tail is where a truncated file breaks).
  n = 0
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      width, height = stream.codec_context.width, stream.codec_context.height
      for n, _ in enumerate(container.decode(stream), 1):
        if n == 1 and packets > 1:
          # Jump near the end: seek to a timestamp a bit before the last frame and decode to the end.
          target = max(0.0, (packets - 2) / fps)
          container.seek(int(target / stream.time_base) + (stream.start_time or 0), stream=stream,
                         backward=True, any_frame=False)
  except av.FFmpegError as e:
    raise VideoError(f'frames do not decode: {e}') from e
  if n == 0:
    raise VideoError('no frame decodes')
  return VideoInfo(num_frames=packets, fps=fps, width=width, height=height)


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
  """Size after resizing the short side to `short_side` (never upscaling), long side rounded."""
  s = min(width, height)
  if s <= short_side:
    return width, height
  if width <= height:
    return short_side, int(round(height * short_side / width))
  return int(round(width * short_side / height)), short_side


def decode(path: str, width: int, height: int, wanted=None, stop: Optional[int] = None
           ) -> Iterator[tuple[int, Optional[np.ndarray], np.ndarray]]:
  """Decodes `path` once, in order. Yields (index, rgb HxWx3 uint8 or None, grey thumbnail).

  `wanted(i)` says whether frame i's full-size RGB is needed (None: all); the thumbnail is always made,
  since quality scores need every frame. Stops after frame `stop - 1` if given.
  """
  thumb_h = max(2, int(round(THUMB_WIDTH * height / width)))
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_count = 1  # parallelism comes from one process per video
    for i, frame in enumerate(container.decode(stream)):
      if stop is not None and i >= stop:
        return
      rgb = None
      if wanted is None or wanted(i):
        rgb = frame.to_ndarray(width=width, height=height, format='rgb24', interpolation='AREA')
      thumb = frame.to_ndarray(width=THUMB_WIDTH, height=thumb_h, format='gray', interpolation='AREA')
      yield i, rgb, thumb


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


class QualityScorer:
  """Per-frame motion energy and shot-cut flags, fed one thumbnail at a time in frame order."""

  def __init__(self):
    self._prev = None
    self._recent: list[float] = []

  def __call__(self, thumb: np.ndarray) -> tuple[float, bool]:
    g = thumb.astype(np.float32) / 255.0
    prev, self._prev = self._prev, g
    if prev is None:
      return 0.0, False
    d = g - prev
    d -= np.median(d)
    a = np.abs(d)
    motion = float(np.mean(a * (a > NOISE_FLOOR)))
    mad = float(a.mean())
    baseline = max(CUT_MIN_BASELINE, float(np.median(self._recent)) if self._recent else 0.0)
    cut = mad > CUT_MAD and mad > CUT_MAD_RATIO * baseline
    self._recent = [] if cut else (self._recent + [mad])[-12:]  # a new shot gets its own baseline
    return motion, cut
