"""Input benchmark: how fast one core gets 16-frame stride-4 windows out of the records vs source videos.

    python -m mgjax.bench.decode [--videos 2] [--seconds 20] [--windows 300] [--workdir DIR]

1. Renders source videos at the real resolution (1280x720, 25 fps, H.264 with a 2 s GOP and B-frames, as
   a camera or YouTube encodes) with the sample generator.
2. Builds the `pretrain` config from them (short side 256, JPEG frames) with one worker and reports build
   speed in frames per second per core (frames / CPU seconds of the whole build, and wall clock).
3. Reads random windows, one core, from (a) the records, as mgjax.data.records does; (b) the source
   videos (seek to the keyframe, decode, convert and resize the window's frames); (c) for the storage
   choice, the same chunks stored as short-GOP H.264 at the record size instead of JPEG frames.
Prints storage per hour of video and ends with `windows/s per core: X (source videos: Y)`.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time

import av
import numpy as np

from mgjax.data import records
from tfds_imigue3k import sample as sample_lib

NUM_FRAMES, STRIDE = 16, 4


def _cpu_seconds() -> float:
  me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def build(manual_dir: str, data_dir: str, short_side: int, workers: int):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_imigue3k import imigue3k_dataset_builder as b  # pylint: disable=g-import-not-at-top
  config = 'pretrain' if short_side == 256 else b.Imigue3kConfig(name=f'pretrain_{short_side}',
                                                                   short_side=short_side)
  builder = b.Builder(config=config, data_dir=data_dir, num_workers=workers)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
                               file_format='array_record')
  return builder


def render_sources(manual_dir: str, videos: int, seconds: int, seed: int):
  """`videos` sample videos of `seconds` at 1280x720, 25 fps, H.264 (a 2 s GOP with B-frames), no cuts."""
  sample_lib.generate(manual_dir, subjects=videos, videos_per_subject=1, unlabelled=0,
                      frames=seconds * sample_lib.FPS, width=1280, height=720, seed=seed, codec='h264',
                      cut_prob=0.0)


def source_window(path: str, start: int, width: int, height: int) -> np.ndarray:
  """Window from a source video: seek to the keyframe before `start`, decode forward, convert 16 frames."""
  wanted = set((start + records.window_frame_indices(NUM_FRAMES, STRIDE)).tolist())
  last = max(wanted)
  out = []
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_count = 1
    fps, tb, t0 = float(stream.average_rate), stream.time_base, stream.start_time or 0
    container.seek(int(start / fps / tb) + t0, stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
      i = int(round(float((frame.pts - t0) * tb) * fps))
      if i in wanted:
        out.append(frame.to_ndarray(width=width, height=height, format='rgb24', interpolation='AREA'))
      if i >= last:
        break
  assert len(out) == NUM_FRAMES, (path, start, len(out))
  return np.stack(out)


def encode_h264_chunk(jpegs, gop: int) -> bytes:
  """Storage alternative: one chunk as short-GOP H.264 (no B-frames) at the record's size."""
  frames = records.decode_jpegs(jpegs)
  frames = frames[:, :frames.shape[1] // 2 * 2, :frames.shape[2] // 2 * 2]  # 4:2:0 needs even sizes
  buf = io.BytesIO()
  with av.open(buf, mode='w', format='mp4') as out:
    st = out.add_stream('libx264', rate=25)
    st.height, st.width = frames.shape[1:3]
    st.pix_fmt = 'yuv420p'
    st.options = {'crf': '20', 'preset': 'veryfast', 'g': str(gop), 'bf': '0', 'threads': '1'}
    sample_lib.encode_frames(out, st, frames)
  return buf.getvalue()


def h264_chunk_window(chunks: list, chunk_len: int, start: int, gop: int) -> np.ndarray:
  """Window from short-GOP H.264 chunks: per touched chunk, decode from the keyframe before its first
  needed frame to its last needed frame."""
  wanted = start + records.window_frame_indices(NUM_FRAMES, STRIDE)
  out = []
  for k in sorted(set((wanted // chunk_len).tolist())):
    local = set((wanted[wanted // chunk_len == k] - k * chunk_len).tolist())
    first_key = (min(local) // gop) * gop
    with av.open(io.BytesIO(chunks[k])) as c:
      st = c.streams.video[0]
      st.thread_count = 1
      for i, frame in enumerate(c.decode(st)):
        if i >= first_key and i in local:  # frames before first_key are decoded only to reach it
          out.append(frame.to_ndarray(format='rgb24'))
        if i >= max(local):
          break
  return np.stack(out)


def _rate(fn, items) -> float:
  t = time.perf_counter()
  for it in items:
    fn(it)
  return len(items) / (time.perf_counter() - t)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--videos', type=int, default=2)
  ap.add_argument('--seconds', type=int, default=20, help='length of each source video')
  ap.add_argument('--windows', type=int, default=300, help='windows read from the records')
  ap.add_argument('--source_windows', type=int, default=40, help='windows read from the source videos')
  ap.add_argument('--short_side', type=int, default=256)
  ap.add_argument('--workdir', default=None, help='keep the videos and records here (default: a temp dir)')
  ap.add_argument('--seed', type=int, default=0)
  a = ap.parse_args(argv)
  work = a.workdir or tempfile.mkdtemp(prefix='mgjax_bench_decode_')
  manual, data = os.path.join(work, 'manual'), os.path.join(work, 'data')
  frames_per_video = a.seconds * sample_lib.FPS
  print(f'workdir {work}')

  t = time.perf_counter()
  render_sources(manual, a.videos, a.seconds, a.seed)
  src_bytes = sum(os.path.getsize(os.path.join(manual, 'videos', f)) for f in os.listdir(
      os.path.join(manual, 'videos')))
  total_frames = a.videos * frames_per_video
  print(f'source: {a.videos} videos x {frames_per_video} frames, 1280x720 H.264, '
        f'rendered in {time.perf_counter() - t:.1f}s')

  cpu0, t = _cpu_seconds(), time.perf_counter()
  builder = build(manual, data, a.short_side, workers=1)
  wall, cpu = time.perf_counter() - t, _cpu_seconds() - cpu0
  source = records.data_source(data, builder.builder_config.name, split='all')
  first = source[0]
  height, width = int(first['height']), int(first['width'])
  rec_bytes = sum(os.path.getsize(os.path.join(builder.data_dir, f)) for f in os.listdir(builder.data_dir)
                  if '.array_record' in f)
  build_fps = total_frames / cpu
  print(f'build: {total_frames} frames in {wall:.1f}s wall, {cpu:.1f} CPU s with 1 worker: '
        f'{build_fps:.0f} frames/s per core ({total_frames / wall:.0f} frames/s wall)')

  rng = np.random.default_rng(a.seed)
  span = records.window_span(NUM_FRAMES, STRIDE)
  # Record windows: a random chunk, a random valid offset in it (windows cross into the next chunk).
  index_meta = [(int(r['start_frame']), int(r['num_frames']), int(r['video_num_frames']))
                for r in (source[i] for i in range(len(source)))]
  picks = []
  while len(picks) < a.windows:
    i = int(rng.integers(len(source)))
    start, n, total = index_meta[i]
    room = min(n, total - span - start + 1)
    if room > 0:
      picks.append((i, int(rng.integers(room))))
  rec_rate = _rate(lambda p: records.read_window(source, p[0], p[1], NUM_FRAMES, STRIDE), picks)

  paths = sorted(os.path.join(manual, 'videos', f) for f in os.listdir(os.path.join(manual, 'videos')))
  src_picks = [(paths[int(rng.integers(len(paths)))], int(rng.integers(frames_per_video - span)))
               for _ in range(a.source_windows)]
  src_rate = _rate(lambda p: source_window(p[0], p[1], width, height), src_picks)

  # Storage alternative: the first video's chunks as short-GOP H.264.
  gop, chunk_len = 16, int(first['num_frames'])
  vid0 = [r for r in (source[i] for i in range(len(source))) if r['video_id'] == first['video_id']]
  chunks = [encode_h264_chunk(r['frames'], gop) for r in vid0]
  h264_bytes_per_frame = sum(len(c) for c in chunks) / sum(int(r['num_frames']) for r in vid0)
  n0 = int(first['video_num_frames'])
  h264_picks = [int(rng.integers(n0 - span)) for _ in range(a.windows // 3)]
  h264_rate = _rate(lambda s: h264_chunk_window(chunks, chunk_len, s, gop), h264_picks)
  check = h264_chunk_window(chunks, chunk_len, h264_picks[0], gop)
  assert check.shape == (NUM_FRAMES, height // 2 * 2, width // 2 * 2, 3), check.shape

  hour = 3600 * sample_lib.FPS
  gb = lambda bytes_per_frame: bytes_per_frame * hour / 1e9
  print(f'storage per hour of 25 fps video: source H.264 1280x720 {gb(src_bytes / total_frames):.2f} GB; '
        f'records (JPEG q90, {width}x{height}) {gb(rec_bytes / total_frames):.2f} GB; '
        f'short-GOP H.264 chunks (g={gop}, {width}x{height}) {gb(h264_bytes_per_frame):.2f} GB')
  print(f'windows/s per core by storage: JPEG frames {rec_rate:.1f}; short-GOP H.264 chunks '
        f'{h264_rate:.1f}; source videos {src_rate:.1f}')
  print(f'records vs source videos: {rec_rate / src_rate:.1f}x')
  print(f'build frames/s per core: {build_fps:.0f}')
  print(f'windows/s per core: {rec_rate:.1f} (source videos: {src_rate:.1f})')


if __name__ == '__main__':
  main()
