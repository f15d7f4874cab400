"""The real iMiGUE label file (labels_20200831.csv, as shipped by its owners) and the official protocol."""

import collections
import csv
import json
import os

from mgjax.data import records
from tests import helpers
from tfds_imigue3k import labels as labels_lib

REAL_LABELS = os.path.join(os.path.dirname(__file__), 'data', 'labels_20200831.csv')
# Short real videos: three of training subjects, two of test subjects.
VIDEOS = {'381': 'train', '275': 'train', '344': 'train', '424': 'test', '441': 'test'}


def _protocol():
  return json.load(open(labels_lib.PROTOCOL_JSON))


def test_whole_real_file_parses_and_splits_as_the_protocol():
  problems = []
  segments, videos = labels_lib.read_labels(REAL_LABELS, labels_lib.read_classes(), problems)
  assert problems == []
  assert len(segments) == 18498 and len(videos) == 359
  assert len({v.subject_id for v in videos.values()}) == 72
  counts = collections.Counter(s.label for s in segments)
  assert counts[31] == 5715 and counts[18] == 2 and counts[30] == 2880  # C32 (raw 99), C19, C31
  rec = _protocol()['mg_recognition']
  test_subjects = set(rec['test_subject_ids'])
  n_test = sum(videos[s.video_id].subject_id in test_subjects for s in segments)
  assert (len(segments) - n_test, n_test) == (13935, 4563)
  emo = _protocol()['emotion']
  for ids in (emo['train_video_ids'], emo['test_video_ids']):
    assert all(str(v) in videos for v in ids)
    wins = sum(videos[str(v)].emotion for v in ids)
    assert wins * 2 == len(ids)  # balanced: 51/51 and 50/50


def test_build_from_real_labels_of_a_few_videos(tmp_path):
  manual = tmp_path / 'manual'
  (manual / 'videos').mkdir(parents=True)
  with open(REAL_LABELS, encoding='utf-8-sig', newline='') as f:
    lines = f.read().splitlines(keepends=True)
  header, rows = lines[0], [ln for ln in lines[1:] if ln.split(',')[0] in VIDEOS]
  with open(manual / 'labels.csv', 'w', encoding='utf-8-sig', newline='') as f:  # with a BOM, as some copies
    f.write(header + ''.join(rows))
  parsed = list(csv.DictReader(rows and [header] + rows))
  last = collections.defaultdict(int)
  for r in parsed:
    last[r['video_id']] = max(last[r['video_id']], int(r['end_frame']))
  for i, vid in enumerate(VIDEOS):
    helpers.write_video(str(manual / 'videos' / f'{vid}.mp4'), last[vid] + 1 + 7, seed=i)
  data = str(tmp_path / 'data')
  helpers.build(str(manual), data, 'clips', num_workers=2)
  expected = collections.Counter(VIDEOS[r['video_id']] for r in parsed)
  got = {s: records.data_source(data, 'clips', s) for s in ('train', 'test')}
  assert {s: len(src) for s, src in got.items()} == dict(expected)  # 25 train, 19 test
  classes = labels_lib.read_classes()
  by_key = {(r['video_id'], int(r['label_id'])): r for r in parsed}
  for split, src in got.items():
    for i in range(len(src)):
      ex = src[i]
      row = by_key[(ex['video_id'].decode(), int(ex['label_id']))]
      assert VIDEOS[row['video_id']] == split
      assert ex['raw_class'] == int(row['class']) and ex['label'] == classes[int(row['class'])]
      assert (ex['start_frame'], ex['end_frame']) == (int(row['start_frame']), int(row['end_frame']))
      assert ex['emotion'] == (row['win_or_lose'] == 'Win') and ex['subject_id'] == int(row['subject_id'])
      assert len(ex['frames']) == int(row['end_frame']) - int(row['start_frame']) + 1
  assert any(records.data_source(data, 'clips', 'train')[i]['label'] == 31 for i in range(25))  # raw 99
  # pretrain: per frame, the class of the covering row that started last (the real rows overlap)
  helpers.build(str(manual), data, 'pretrain', num_workers=2)
  src = records.data_source(data, 'pretrain', 'all')
  frames, listed = collections.defaultdict(list), collections.defaultdict(set)
  for i in range(len(src)):
    r = src[i]
    frames[r['video_id'].decode()] += r['frame_label'].tolist()
    listed[r['video_id'].decode()] |= {tuple(x) for x in r['segments'].tolist()}
  overlapping = 0
  for vid in VIDEOS:
    rows = [(int(r['start_frame']), int(r['label_id']), int(r['end_frame']), classes[int(r['class'])])
            for r in parsed if r['video_id'] == vid]
    want = []
    for f in range(last[vid] + 8):
      covering = [r for r in rows if r[0] <= f <= r[2]]
      overlapping += len(covering) > 1
      want.append(max(covering)[3] if covering else records.NO_GESTURE)
    assert frames[vid] == want, vid
    assert listed[vid] == {(a, b, c) for a, _, b, c in rows}
  assert overlapping > 0  # the rule for overlaps was exercised
