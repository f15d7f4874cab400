"""Reading and validating the metadata of a manual_dir: labels.csv, videos.csv, protocol.json.

Every problem found is collected as a `Problem` naming the file, the row (line number as an editor shows
it, header = line 1) and what is wrong, so the builder can report all of them at once instead of the first.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Optional

_HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES_TSV = os.path.join(_HERE, 'classes.tsv')
PROTOCOL_JSON = os.path.join(_HERE, 'protocol.json')

LABEL_COLUMNS = ('video_id', 'label_id', 'start_frame', 'end_frame', 'class', 'subject_id', 'win_or_lose')
VIDEO_COLUMNS = ('video_id', 'subject_id', 'win_or_lose')
EMOTION = {'lose': 0, 'win': 1}  # 0 = lose / negative, 1 = win / positive


@dataclasses.dataclass(frozen=True)
class Problem:
  file: str
  row: Optional[int]  # line number in `file`, None for file-level problems
  video_id: Optional[str]
  problem: str

  def __str__(self):
    where = f'{self.file}:{self.row}' if self.row else self.file
    vid = f' (video {self.video_id})' if self.video_id is not None else ''
    return f'{where}{vid}: {self.problem}'


@dataclasses.dataclass(frozen=True)
class Segment:
  video_id: str
  label_id: int
  start_frame: int  # first frame, 0-based
  end_frame: int  # last frame, inclusive (iMiGUE rows tile as end + 1 == next start)
  raw_class: int
  label: int
  row: int


@dataclasses.dataclass
class VideoMeta:
  video_id: str
  subject_id: int
  emotion: int
  source: str  # 'labels.csv' or 'videos.csv'
  row: int  # first row that named this video


def read_classes(path: str = CLASSES_TSV) -> dict[int, int]:
  """raw class id (1..31, 99) -> label index 0..31."""
  with open(path, encoding='utf-8-sig') as f:
    rows = list(csv.DictReader(f, delimiter='\t'))
  return {int(r['raw_class']): int(r['index']) for r in rows}


def class_names(path: str = CLASSES_TSV) -> list[str]:
  with open(path, encoding='utf-8-sig') as f:
    return [r['name'] for r in csv.DictReader(f, delimiter='\t')]


def video_sort_key(video_id: str):
  """Numeric ids in numeric order, then the others in string order."""
  return (0, int(video_id), '') if video_id.isdigit() else (1, 0, video_id)


def read_protocol(path: str, problems: list[Problem]) -> dict:
  name = os.path.basename(path)
  try:
    with open(path, encoding='utf-8-sig') as f:
      proto = json.load(f)
    rec = proto['mg_recognition']
    out = {
        'train_subjects': {int(s) for s in rec['train_subject_ids']},
        'test_subjects': {int(s) for s in rec['test_subject_ids']},
        'emotion_train_videos': {str(v) for v in proto.get('emotion', {}).get('train_video_ids', [])},
        'emotion_test_videos': {str(v) for v in proto.get('emotion', {}).get('test_video_ids', [])},
    }
  except (OSError, ValueError, KeyError, TypeError) as e:
    problems.append(Problem(name, None, None, f'cannot read protocol: {type(e).__name__}: {e}'))
    return {'train_subjects': set(), 'test_subjects': set(),
            'emotion_train_videos': set(), 'emotion_test_videos': set()}
  both = out['train_subjects'] & out['test_subjects']
  if both:
    problems.append(Problem(name, None, None, f'subjects in both train and test: {sorted(both)}'))
  return out


def _read_csv(path: str, required: tuple[str, ...], problems: list[Problem]):
  """Yields (line_number, row dict) for rows that have every required column; records the others."""
  name = os.path.basename(path)
  with open(path, encoding='utf-8-sig', newline='') as f:
    reader = csv.reader(f)
    try:
      header = [h.strip() for h in next(reader)]
    except StopIteration:
      problems.append(Problem(name, 1, None, 'empty file, no header'))
      return
    missing = [c for c in required if c not in header]
    if missing:
      problems.append(Problem(name, 1, None, f'missing required column(s) {missing}; header is {header}'))
      return
    for fields in reader:
      line = reader.line_num
      if not any(x.strip() for x in fields):
        continue
      if len(fields) != len(header):
        problems.append(Problem(name, line, fields[0] if fields else None,
                                f'malformed row: {len(fields)} fields, header has {len(header)}'))
        continue
      yield line, {h: v.strip() for h, v in zip(header, fields)}


def _int_fields(row: dict, cols: tuple[str, ...], name: str, line: int, problems: list[Problem]):
  out, bad = {}, []
  for c in cols:
    try:
      out[c] = int(row[c])
    except ValueError:
      bad.append(f'{c}={row[c]!r}')
  if bad:
    problems.append(Problem(name, line, row['video_id'], f'non-numeric field(s): {", ".join(bad)}'))
    return None
  return out


def _emotion(row: dict, name: str, line: int, problems: list[Problem]) -> Optional[int]:
  e = EMOTION.get(row['win_or_lose'].lower())
  if e is None:
    problems.append(Problem(name, line, row['video_id'],
                            f'win_or_lose={row["win_or_lose"]!r}, expected Win or Lose'))
  return e


def _add_video(videos: dict, meta: VideoMeta, name: str, line: int, problems: list[Problem]):
  prev = videos.get(meta.video_id)
  if prev is None:
    videos[meta.video_id] = meta
    return
  shown = {'subject_id': lambda m: m.subject_id, 'win_or_lose': lambda m: ('Lose', 'Win')[m.emotion]}
  for field, get in shown.items():
    if get(prev) != get(meta):
      problems.append(Problem(
          name, line, meta.video_id,
          f'{field} {get(meta)} disagrees with {get(prev)} in {prev.source}:{prev.row} for the same video'))


def read_labels(path: str, classes: dict[int, int], problems: list[Problem]):
  """Parses labels.csv -> (segments, videos). Bad rows become problems and are left out."""
  name = os.path.basename(path)
  segments, videos, seen = [], {}, {}
  for line, row in _read_csv(path, LABEL_COLUMNS, problems):
    vals = _int_fields(row, ('label_id', 'start_frame', 'end_frame', 'class', 'subject_id'), name, line,
                       problems)
    emotion = _emotion(row, name, line, problems)
    if vals is None or emotion is None:
      continue
    vid = row['video_id']
    ok = True
    if vals['class'] not in classes:
      problems.append(Problem(name, line, vid, f'unknown class {vals["class"]} (known: 1..31 and 99)'))
      ok = False
    if vals['start_frame'] < 0:
      problems.append(Problem(name, line, vid, f'start_frame {vals["start_frame"]} < 0'))
      ok = False
    if vals['end_frame'] <= vals['start_frame']:
      problems.append(Problem(name, line, vid,
                              f'end_frame {vals["end_frame"]} <= start_frame {vals["start_frame"]}'))
      ok = False
    key = (vid, vals['label_id'])
    if key in seen:
      problems.append(Problem(name, line, vid,
                              f'duplicate (video_id, label_id) = {key}, first at row {seen[key]}'))
      ok = False
    else:
      seen[key] = line
    _add_video(videos, VideoMeta(vid, vals['subject_id'], emotion, name, line), name, line, problems)
    if ok:
      segments.append(Segment(vid, vals['label_id'], vals['start_frame'], vals['end_frame'],
                              vals['class'], classes[vals['class']], line))
  return segments, videos


def read_videos_csv(path: str, videos: dict, problems: list[Problem]) -> None:
  """Adds the videos listed in videos.csv (unlabelled ones, usually) to `videos`."""
  name = os.path.basename(path)
  for line, row in _read_csv(path, VIDEO_COLUMNS, problems):
    vals = _int_fields(row, ('subject_id',), name, line, problems)
    emotion = _emotion(row, name, line, problems)
    if vals is None or emotion is None:
      continue
    _add_video(videos, VideoMeta(row['video_id'], vals['subject_id'], emotion, name, line), name, line,
               problems)
