"""Bad input stops the build with a message naming file, row and problem, and writes nothing; skip_bad
skips and reports instead; an interrupted build leaves nothing that looks complete."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mgjax.data import records
from tests import helpers
from tfds_imigue3k import BuildError, Imigue3kConfig

HEADER = ('video_id,label_id,start_time,start_frame,end_time,end_frame,class,subject_id,subject_gender,'
          'subject_nationality,win_or_lose')
ROWS = [  # lines 2..5 of labels.csv; videos 1 and 2: a training subject (2), video 3: a test subject (1)
    '1,1,0.4,10,1.2,30,11,2,F,X,Win',
    '1,2,1.4,35,2.0,50,99,2,F,X,Win',
    '2,1,0.2,5,1.0,25,17,2,F,X,Lose',
    '3,1,0.4,10,1.6,40,29,1,M,X,Lose',
]
FRAMES = 60


def _make_manual(root):
  manual = os.path.join(root, 'manual')
  os.makedirs(os.path.join(manual, 'videos'))
  for i, vid in enumerate(('1', '2', '3')):
    helpers.write_video(os.path.join(manual, 'videos', f'{vid}.mp4'), FRAMES, seed=i,
                        container_options={'movflags': 'faststart'})
  _write_labels(manual, [HEADER] + ROWS)
  return manual


def _write_labels(manual, lines, name='labels.csv'):
  with open(os.path.join(manual, name), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def _set_row(manual, line, field, value):
  """Edits one field of the current labels.csv (edits add up)."""
  lines = open(os.path.join(manual, 'labels.csv')).read().splitlines()
  cols = HEADER.split(',')
  parts = lines[line - 1].split(',')
  parts[cols.index(field)] = value
  lines[line - 1] = ','.join(parts)
  _write_labels(manual, lines)


def _truncate(manual, vid, frac=0.6):
  path = os.path.join(manual, 'videos', f'{vid}.mp4')
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:int(len(data) * frac)])


CASES = {
    'missing_video': (lambda m: os.remove(os.path.join(m, 'videos', '2.mp4')),
                      ['labels.csv:4 (video 2): missing video file videos/2.<ext>']),
    # Fixed bytes: random ones are sometimes probed as an audio-only stream (about 1 in 100).
    'unreadable_video': (lambda m: open(os.path.join(m, 'videos', '2.mp4'), 'wb').write(b'no video\n' * 300),
                         ['videos/2.mp4 (video 2): unreadable by FFmpeg']),
    'truncated_video': (lambda m: _truncate(m, '2'),
                        ['videos/2.mp4 (video 2): truncated: header says 60 frames']),
    'segment_outside_video': (lambda m: _set_row(m, 5, 'end_frame', '75'),
                              ['labels.csv:5 (video 3): segment frames 10..75 outside the video (60 frames)']),
    'end_not_after_start': (lambda m: _set_row(m, 3, 'end_frame', '35'),
                            ['labels.csv:3 (video 1): end_frame 35 <= start_frame 35']),
    'unknown_class': (lambda m: _set_row(m, 2, 'class', '77'), ['labels.csv:2 (video 1): unknown class 77']),
    'non_numeric_field': (lambda m: _set_row(m, 4, 'start_frame', 'five'),
                          ["labels.csv:4 (video 2): non-numeric field(s): start_frame='five'"]),
    'duplicate_label_id': (lambda m: _write_labels(m, [HEADER] + ROWS + ['1,2,2.2,55,2.3,58,4,2,F,X,Win']),
                           ['labels.csv:6 (video 1): duplicate (video_id, label_id) = (\'1\', 2), first at row 3']),
    'missing_column': (lambda m: _write_labels(m, [','.join(r.split(',')[:6] + r.split(',')[7:])
                                                   for r in [HEADER] + ROWS]),
                       ["labels.csv:1: missing required column(s) ['class']"]),
    'malformed_row': (lambda m: _write_labels(m, [HEADER] + ROWS + ['3,2,1.8,45']),
                      ['labels.csv:6 (video 3): malformed row: 4 fields, header has 11']),
    'subject_disagrees': (lambda m: _set_row(m, 3, 'subject_id', '5'),
                          ['labels.csv:3 (video 1): subject_id 5 disagrees with 2 in labels.csv:2']),
    'win_or_lose_disagrees': (lambda m: _set_row(m, 3, 'win_or_lose', 'Lose'),
                              ['labels.csv:3 (video 1): win_or_lose Lose disagrees with Win in labels.csv:2']),
    'bad_videos_csv': (lambda m: _write_labels(m, ['video_id,subject_id,win_or_lose', '3,1,Draw'], 'videos.csv'),
                       ["videos.csv:2 (video 3): win_or_lose='Draw', expected Win or Lose"]),
    'missing_labels_file': (lambda m: os.remove(os.path.join(m, 'labels.csv')),
                            ['labels.csv: missing file']),
}


def _written(data_dir):
  """Everything under data_dir that a reader or a later build could take for data."""
  found = []
  for root, dirs, files in os.walk(data_dir):
    found += [os.path.join(root, d) for d in dirs if 'incomplete' in d or d in records.READABLE_VERSIONS]
    found += [os.path.join(root, f) for f in files if '.array_record' in f or f == 'dataset_info.json'
              or f == 'skipped.jsonl']
  return found


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_stops_with_clear_message_and_writes_nothing(case, tmp_path):
  manual = _make_manual(str(tmp_path))
  mutate, expected = CASES[case]
  mutate(manual)
  data = str(tmp_path / 'data')
  with pytest.raises(BuildError) as err:
    helpers.build(manual, data, 'clips', num_workers=1)
  msg = str(err.value)
  for fragment in expected:
    assert fragment in msg, msg
  assert 'nothing was written' in msg
  assert _written(data) == []


def test_every_problem_is_listed_not_only_the_first(tmp_path):
  manual = _make_manual(str(tmp_path))
  for name in ('unknown_class', 'truncated_video', 'segment_outside_video'):
    CASES[name][0](manual)
  _set_row(manual, 3, 'class', '77')  # a second bad row, on top of the cases above
  data = str(tmp_path / 'data')
  with pytest.raises(BuildError) as err:
    helpers.build(manual, data, 'pretrain', num_workers=2)
  msg = str(err.value)
  assert msg.startswith('4 problem(s)'), msg
  for fragment in ('labels.csv:2 (video 1): unknown class 77', 'labels.csv:3 (video 1): unknown class 77',
                   'videos/2.mp4 (video 2): truncated', 'labels.csv:5 (video 3): segment frames 10..75'):
    assert fragment in msg, msg
  assert _written(data) == []


def test_skip_bad_skips_and_reports(tmp_path, monkeypatch):
  manual = _make_manual(str(tmp_path))
  lines = [HEADER] + ROWS
  lines[1] = lines[1].replace(',11,2,', ',77,2,')  # row 2: unknown class
  _write_labels(manual, lines + ['1,2,2.2,55,2.3,58,4,2,F,X,Win'])  # row 6: duplicate of row 3
  _truncate(manual, '2')  # video 2 is unusable
  monkeypatch.setenv('IMIGUE3K_SKIP_BAD', '1')  # as the CLI would set it
  data = str(tmp_path / 'data')
  builder = helpers.build(manual, data, 'clips', num_workers=1)
  report = [json.loads(l) for l in open(os.path.join(builder.data_dir, 'skipped.jsonl'))]
  assert sorted((r['file'], r['row'], r['video_id']) for r in report) == [
      ('labels.csv', 2, '1'), ('labels.csv', 6, '1'), ('videos/2.mp4', None, '2')]
  assert all(r['problem'] for r in report)
  train, test = (records.data_source(data, 'clips', s) for s in ('train', 'test'))
  assert [(train[i]['video_id'], train[i]['label_id']) for i in range(len(train))] == [(b'1', 2)]
  assert [(test[i]['video_id'], test[i]['label_id']) for i in range(len(test))] == [(b'3', 1)]
  # Pretraining keeps the good videos, and reports the truncated one.
  builder = helpers.build(manual, data, 'pretrain', num_workers=1)
  src = records.data_source(data, 'pretrain', 'all')
  assert sorted(src[i]['video_id'] for i in range(len(src))) == [b'1', b'3']  # one chunk each
  assert 'videos/2.mp4' in open(os.path.join(builder.data_dir, 'skipped.jsonl')).read()


def test_unknown_config_kind_is_an_error():
  with pytest.raises(ValueError, match="kind must be clips or pretrain, got 'frames'"):
    Imigue3kConfig(name='x', kind='frames')


def test_killed_build_leaves_nothing_complete_and_rebuilds(sample, tmp_path):
  manual, truth = sample
  data = str(tmp_path / 'data')
  code = ('import sys; sys.path.insert(0, %r); from tests import helpers; '
          'helpers.build(%r, %r, "pretrain", num_workers=1)') % (os.getcwd(), manual, data)
  proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    # Wait until examples are being written, then kill the build without warning.
    while time.time() < deadline and not any('_staging' in root for root, _, fs in os.walk(data) if fs):
      time.sleep(0.05)
    assert proc.poll() is None, 'build finished before it could be killed'
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert not os.path.exists(os.path.join(data, 'imigue3k', 'pretrain', 
                                        records.READABLE_VERSIONS[-1]))
  with pytest.raises(Exception):
    records.data_source(data, 'pretrain', 'all')
  helpers.build(manual, data, 'pretrain', num_workers=2)
  src = records.data_source(data, 'pretrain', 'all')
  assert len(src) == sum(-(-v['num_frames'] // 64) for v in truth['videos'].values())
