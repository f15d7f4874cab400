"""iMiGUE-3K: press-conference videos of tennis players with 32 micro-gesture classes.

Two configs:
  clips     one record per labelled segment; splits train / test by the cross-subject protocol.
  pretrain  every video, labelled or not, cut into fixed-length chunks with per-frame quality scores and
            micro-gesture labels (and the label rows overlapping each chunk);
            split `train` leaves out the recognition test subjects, `heldout` has them, and TFDS's
            `all` (= train + heldout) keeps everything.

Frames are stored as JPEG bytes (one per frame, short side resized at build time), so a reader decodes
exactly the frames of the window it samples. Records are written in a fixed order (disable_shuffling):
chunk k+1 of a video is the record right after chunk k, so a window that runs past its chunk reads the
next record. No feature needs TensorFlow to decode: tfds.data_source reads the records with numpy only.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from tfds_imigue3k import encode as encode_lib
from tfds_imigue3k import labels as labels_lib

_CITATION = """\
@inproceedings{liu2021imigue,
  title={iMiGUE: An Identity-free Video Dataset for Micro-Gesture Understanding and Emotion Analysis},
  author={Liu, Xin and Shi, Henglin and Chen, Haoyu and Yu, Zitong and Li, Xiaobai and Zhao, Guoying},
  booktitle={CVPR},
  year={2021}
}
"""

_HOMEPAGE = 'https://github.com/linuxsino/iMiGUE'

SKIP_REPORT = 'skipped.jsonl'
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.flv', '.ts')


class BuildError(ValueError):
  """Bad input found while building; lists every problem."""


@dataclasses.dataclass
class Imigue3kConfig(tfds.core.BuilderConfig):
  """What the records look like. A config with other values needs its own name; from the CLI:
  --config='{"name": "pretrain_128", "short_side": 128, "chunk_frames": 32}'.
  """
  kind: str = ''  # 'clips' or 'pretrain'; empty: taken from the name's prefix
  short_side: int = 256  # frames resized so the short side is this (never upscaled)
  chunk_frames: int = 64  # pretrain: frames per record
  jpeg_quality: int = 90

  def __post_init__(self):
    if not self.kind:
      self.kind = 'pretrain' if self.name.startswith('pretrain') else 'clips'
    if self.kind not in ('clips', 'pretrain'):
      raise ValueError(f'Imigue3kConfig.kind must be clips or pretrain, got {self.kind!r}')


def _frame_features() -> dict:
  return {
      'frames': tfds.features.Tensor(shape=(None,), dtype=np.object_,
                                     doc='JPEG bytes, one element per frame'),
      'video_id': tfds.features.Text(),
      'subject_id': np.int64,
      'emotion': tfds.features.Scalar(np.int64, doc='0 = lose / negative, 1 = win / positive'),
      'start_frame': tfds.features.Scalar(np.int64, doc='index of the first frame in the source video'),
      'num_frames': np.int64,
      'fps': np.float32,
      'height': np.int64,
      'width': np.int64,
  }


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for iMiGUE-3K (and iMiGUE) from raw videos and the label file."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release: clips and pretrain configs, JPEG frames, quality scores.',
      '1.1.0': 'pretrain: per-frame micro-gesture class (frame_label), the segments of labels.csv that '
               'overlap each chunk, and whether the video is labelled.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Request the videos from the iMiGUE owners, then lay out manual_dir as:
    labels.csv               iMiGUE label file (video_id,label_id,start_frame,end_frame,class,
                             subject_id,...,win_or_lose), e.g. labels_20200831.csv renamed
    videos/<video_id>.<ext>  one video per video_id, any container FFmpeg reads
    videos.csv               optional: video_id,subject_id,win_or_lose for unlabelled videos
    protocol.json            optional: evaluation splits overriding the official ones
  `python -m tfds_imigue3k.sample DIR` writes a small synthetic manual_dir in this layout.
  """
  BUILDER_CONFIGS = [
      Imigue3kConfig(name='clips', description='One record per labelled micro-gesture segment.'),
      Imigue3kConfig(name='pretrain',
                     description='Every video in fixed-length chunks with per-frame quality scores and '
                                 'micro-gesture labels.'),
  ]
  builder_config_cls = Imigue3kConfig

  def __init__(self, *, skip_bad: Optional[bool] = None, num_workers: Optional[int] = None, **kwargs):
    """skip_bad: skip bad rows and videos, listing them in skipped.jsonl, instead of failing.
    num_workers: processes that decode videos (default every core); the records do not depend on it.
    From the CLI, set them with the environment variables IMIGUE3K_SKIP_BAD=1 and IMIGUE3K_WORKERS=N.
    """
    super().__init__(**kwargs)
    env = os.environ.get
    self.skip_bad = skip_bad if skip_bad is not None else env('IMIGUE3K_SKIP_BAD', '0') not in ('', '0')
    self.num_workers = num_workers if num_workers is not None else int(env('IMIGUE3K_WORKERS', '0'))

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    feats = _frame_features()
    if cfg.kind == 'clips':
      feats.update({
          'label': tfds.features.ClassLabel(names=[f'C{i + 1}' for i in range(32)]),
          'raw_class': tfds.features.Scalar(np.int64, doc='class as in labels.csv: 1..31, 99 = C32'),
          'label_id': np.int64,
          'end_frame': tfds.features.Scalar(np.int64, doc='last frame, inclusive'),
      })
    else:
      feats.update({
          'chunk_index': np.int64,
          'num_chunks': np.int64,
          'video_num_frames': np.int64,
          'motion': tfds.features.Tensor(shape=(None,), dtype=np.float32,
                                         doc='per frame: mean |grey change| from the previous frame'),
          'cut': tfds.features.Tensor(shape=(None,), dtype=np.bool_,
                                      doc='per frame: a shot cut between the previous frame and this one'),
          'motion_energy': tfds.features.Scalar(np.float32, doc='mean motion over non-cut frames'),
          'has_cut': np.bool_,
          'labelled': tfds.features.Scalar(np.bool_, doc='the video has rows in labels.csv'),
          'frame_label': tfds.features.Tensor(
              shape=(None,), dtype=np.int64,
              doc=f'per frame: micro-gesture class 0..31, {encode_lib.NO_GESTURE} = none (or the video is '
                  'unlabelled); where segments overlap, the one that started last'),
          'segments': tfds.features.Tensor(
              shape=(None, 3), dtype=np.int64,
              doc='segments of labels.csv overlapping this chunk: start frame, end frame (inclusive), '
                  'class 0..31, in video frames'),
      })
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(feats),
        homepage=_HOMEPAGE,
        citation=_CITATION,
        disable_shuffling=True,
        supervised_keys=None,
    )

  # ----------------------------------------------------------------------------------------------------
  # Splits: read and validate everything before writing anything.

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    catalog = load_catalog(str(dl_manager.manual_dir), num_workers=self.num_workers)
    if catalog.problems and not self.skip_bad:
      raise BuildError(format_problems(catalog.problems))
    self._skipped = [dataclasses.asdict(p) for p in catalog.problems]
    self._write_skip_report()
    # The evaluation splits this build used travel with the records (evaluation reads the emotion split).
    shutil.copyfile(catalog.protocol_path, os.path.join(self.data_dir, 'protocol.json'))
    proto = catalog.protocol
    if cfg.kind == 'clips':
      by_split = {'train': [], 'test': []}
      unassigned = 0
      for seg in catalog.segments:
        subject = catalog.videos[seg.video_id].subject_id
        if subject in proto['test_subjects']:
          by_split['test'].append(seg)
        elif subject in proto['train_subjects']:
          by_split['train'].append(seg)
        else:
          unassigned += 1
      if unassigned:
        logging.warning('%d segments belong to subjects in neither split of the protocol; left out of '
                        'clips (pretrain keeps their videos).', unassigned)
    else:
      # `all` is TFDS's own name for the union of the splits: train + heldout, each video stored once.
      ids = sorted(catalog.usable_videos, key=labels_lib.video_sort_key)
      heldout = [v for v in ids if catalog.videos[v].subject_id in proto['test_subjects']]
      by_split = {'train': [v for v in ids if v not in set(heldout)], 'heldout': heldout}
    empty = [s for s, items in by_split.items() if not items]
    if empty:  # TFDS cannot write an empty split
      logging.warning('Split(s) %s would be empty and are left out.', empty)
    return {s: self._generate_examples(catalog, items, s) for s, items in by_split.items() if items}

  def _write_skip_report(self):
    if self.skip_bad:
      with open(os.path.join(self.data_dir, SKIP_REPORT), 'w') as f:
        for item in self._skipped:
          f.write(json.dumps(item) + '\n')

  # ----------------------------------------------------------------------------------------------------
  # Examples: one worker task per video, results streamed back in video order through staging files.

  def _generate_examples(self, catalog, items, split: str):
    """Yields (key, example) in video order. Keys are consecutive ints: records keep this order.

    Each video is decoded by a worker into a staging file, which is read back in order and deleted.
    """
    cfg = self.builder_config
    per_video = {}
    for seg in (items if cfg.kind == 'clips' else catalog.segments):
      per_video.setdefault(seg.video_id, []).append(seg)
    if cfg.kind == 'clips':
      vids = sorted(per_video, key=labels_lib.video_sort_key)
    else:
      vids = list(items)
    staging = os.path.join(self.data_dir, '_staging')
    os.makedirs(staging, exist_ok=True)
    settings = encode_lib.Settings(cfg.kind, cfg.short_side, cfg.chunk_frames, cfg.jpeg_quality)
    jobs = [encode_lib.VideoJob(settings, vid, catalog.paths[vid], catalog.videos[vid], catalog.info[vid],
                                per_video.get(vid, []), os.path.join(staging, f'{cfg.kind}_{vid}.pkl'))
            for vid in vids]
    key, failed = 0, []
    index = {'video_id': [], 'label': [], 'start_frame': [], 'num_frames': []}
    with _pool(self.num_workers, len(jobs)) as pool:
      results = pool.imap(encode_lib.process_video, jobs)  # in job order, which is video order
      for job, error in tfds.core.utils.tqdm(zip(jobs, results), total=len(jobs),
                                             desc=f'{cfg.name} videos', unit='video'):
        if error:
          failed.append(error)
          continue
        for example in encode_lib.read_staged(job.out_path):
          for k in index:
            index[k].append(example.get(k, -1) if k != 'video_id' else example[k])
          yield key, example
          key += 1
        os.remove(job.out_path)
    os.rmdir(staging)
    # Per-record metadata without frames, in record order: samplers read it instead of the records.
    with open(os.path.join(self.data_dir, f'index-{split}.json'), 'w') as f:
      json.dump({k: [int(x) if k != 'video_id' else x for x in v] for k, v in index.items()}, f)
    if failed:
      if not self.skip_bad:
        raise BuildError(format_problems(failed))
      self._skipped += [dataclasses.asdict(p) for p in failed]
      self._write_skip_report()


class _SerialPool:
  def imap(self, fn, tasks):
    return map(fn, tasks)

  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def _pool(num_workers: int, num_tasks: int):
  """A process pool (spawned: forking a process that holds TensorFlow or JAX threads is unsafe)."""
  n = min(num_workers or os.cpu_count() or 1, num_tasks)
  if n <= 1:
    return _SerialPool()
  # A spawned worker re-imports the parent's __main__ first: for the `tfds` CLI that is TensorFlow
  # (seconds and hundreds of MB per worker), for a script without a __main__ guard the whole build
  # again. The workers run tfds_imigue3k.encode only, so hide __main__ while they start.
  main = sys.modules['__main__']
  saved = {k: main.__dict__[k] for k in ('__file__', '__spec__') if k in main.__dict__}
  main.__dict__.pop('__file__', None)
  main.__spec__ = None
  try:
    return multiprocessing.get_context('spawn').Pool(n)
  finally:
    main.__dict__.pop('__spec__', None)
    main.__dict__.update(saved)


# ------------------------------------------------------------------------------------------------------
# The catalog: metadata + probed videos, validated.

@dataclasses.dataclass
class Catalog:
  videos: dict  # video_id -> VideoMeta
  paths: dict  # video_id -> path of its file
  info: dict  # video_id -> VideoInfo
  segments: list  # usable segments
  usable_videos: list  # video ids whose file probed fine and whose rows agree
  protocol: dict
  protocol_path: str
  problems: list


def format_problems(problems) -> str:
  lines = [f'{len(problems)} problem(s) in the input; nothing was written. '
           'Fix them, or build with skip_bad=True to skip them and get a report:']
  return '\n'.join(lines + [f'  {p}' for p in problems])


def _find_video(videos_dir: str, video_id: str, listing: dict) -> tuple[Optional[str], Optional[str]]:
  matches = sorted(n for n in listing.get(video_id, []) if n.lower().endswith(VIDEO_EXTENSIONS))
  if not matches:
    return None, f'missing video file videos/{video_id}.<ext>'
  if len(matches) > 1:
    return None, f'several files for one video: {matches}'
  return os.path.join(videos_dir, matches[0]), None


def load_catalog(manual_dir: str, num_workers: int = 0) -> Catalog:
  """Reads and validates a manual_dir. Problems are collected, never raised."""
  problems: list = []
  classes = labels_lib.read_classes()
  labels_path = os.path.join(manual_dir, 'labels.csv')
  if not os.path.exists(labels_path):
    problems.append(labels_lib.Problem('labels.csv', None, None, f'missing file {labels_path}'))
    segments, videos = [], {}
  else:
    segments, videos = labels_lib.read_labels(labels_path, classes, problems)
  videos_csv = os.path.join(manual_dir, 'videos.csv')
  if os.path.exists(videos_csv):
    labels_lib.read_videos_csv(videos_csv, videos, problems)
  proto_path = os.path.join(manual_dir, 'protocol.json')
  proto_path = proto_path if os.path.exists(proto_path) else labels_lib.PROTOCOL_JSON
  protocol = labels_lib.read_protocol(proto_path, problems)
  # Videos whose rows disagreed on subject / win-or-lose are unusable: their labels are unknown.
  bad_videos = {p.video_id for p in problems if 'disagrees with' in p.problem}

  videos_dir = os.path.join(manual_dir, 'videos')
  listing: dict = {}
  if os.path.isdir(videos_dir):
    for n in os.listdir(videos_dir):
      listing.setdefault(os.path.splitext(n)[0], []).append(n)
  ids = sorted(videos, key=labels_lib.video_sort_key)
  paths = {}
  for vid in ids:
    path, err = _find_video(videos_dir, vid, listing)
    if err:
      meta = videos[vid]
      problems.append(labels_lib.Problem(meta.source, meta.row, vid, err))
      bad_videos.add(vid)
    else:
      paths[vid] = path
  info = {}
  probe_ids = [v for v in ids if v in paths]
  with _pool(num_workers, len(probe_ids)) as pool:
    results = pool.imap(encode_lib.probe_task, [paths[v] for v in probe_ids])
    for vid, (vinfo, err) in zip(probe_ids,
                                 tfds.core.utils.tqdm(results, total=len(probe_ids), desc='probe videos',
                                                      unit='video')):
      if err:
        problems.append(labels_lib.Problem(f'videos/{os.path.basename(paths[vid])}', None, vid, err))
        bad_videos.add(vid)
      else:
        info[vid] = vinfo
  usable_segments = []
  for seg in segments:
    if seg.video_id in bad_videos:
      continue
    n = info[seg.video_id].num_frames
    if seg.end_frame >= n:
      problems.append(labels_lib.Problem(
          'labels.csv', seg.row, seg.video_id,
          f'segment frames {seg.start_frame}..{seg.end_frame} outside the video ({n} frames)'))
      continue
    usable_segments.append(seg)
  usable = [v for v in ids if v not in bad_videos]
  return Catalog(videos, paths, info, usable_segments, usable, protocol, proto_path, problems)
