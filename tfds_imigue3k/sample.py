"""Synthetic iMiGUE-style manual_dir: press-conference videos of a seated figure making micro-gestures.

    python -m tfds_imigue3k.sample OUT [--subjects 8] [--videos_per_subject 2] [--frames 500] [--venues 4]
        [--seed 0]

writes OUT/labels.csv (iMiGUE schema), OUT/videos/<id>.mp4 (MPEG-4), OUT/videos.csv (every video, the
unlabelled ones included), OUT/protocol.json (cross-subject split of the sample's subjects, emotion split
of its videos) and OUT/sample_truth.json (shot cuts and gestures as generated, for tests).

Each frame shows a press room (sponsor board, table; `venues` rooms with two cameras each, shared by the
videos as a few tournaments' rooms are) and a figure (head, hair, eyes, mouth, torso, arms, hands of
human proportions) whose look depends on the subject. Between segments the figure idles (slow sway, hands
on the table), and some videos open on the empty room before the player sits down (a static stretch); in
a segment it performs one of all 32 iMiGUE classes (`GESTURES`), from hand-to-jaw to a small lip press.
Frames carry camera noise and flicker; some videos switch camera (a shot cut). A video's win/lose label
decides which gestures it tends to contain (`POSITIVE`, `NEGATIVE`), so emotion can be learned from the
gestures. Everything is drawn from one seed: the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import multiprocessing
import os
import time

import av
import numpy as np
from PIL import Image, ImageDraw

from tfds_imigue3k import labels as labels_lib

FPS = 25
PLAYER_ID_BASE = 1001  # subject ids of the `players` (iMiGUE's run from 1 to 72)
HAND = 0.5  # hand radius in head radii: a hand is about three quarters of a face long

# Gestures: per class (0-based index into classes.tsv), which hand goes where, how it moves there, and
# what the head / body / mouth do. Anchors are named points on the figure (see _anchors); 'osc' is the
# amplitude (in head radii) and frequency (cycles per second) of a movement around the target.
# keys: r / l = right / left hand target anchor, osc = (amp, hz), body = (dx, dy), head = (dx, dy),
# shoulders = raise, mouth = lip press, behind = hands hidden behind the torso, obj = holds an object.
GESTURES = {
    0: dict(head=(0.0, 0.5), shoulders=0.5),  # turtle neck
    1: dict(shoulders=0.35, head=(0.0, -0.2), breathe=1.0),  # bulging face, deep breath
    2: dict(r='hat', osc=(0.1, 0.5)),  # touching hat
    3: dict(r='head_side', osc=(0.25, 3.0)),  # scratching head
    4: dict(r='forehead', osc=(0.2, 2.5)),  # forehead
    5: dict(r='face_r', l='face_l'),  # covering face
    6: dict(r='eye_r', l='eye_l', osc=(0.15, 2.0)),  # rubbing eyes
    7: dict(r='cheek', osc=(0.15, 2.0)),  # facial parts
    8: dict(r='ear', osc=(0.1, 1.0)),  # touching ears
    9: dict(r='mouth', osc=(0.08, 4.0)),  # biting nails
    10: dict(r='chin'),  # touching jaw
    11: dict(r='neck', osc=(0.2, 2.5)),  # neck
    12: dict(r='hair_back', osc=(0.45, 1.2)),  # playing with hair
    13: dict(r='collar_r', l='collar_l', osc=(0.2, 1.5)),  # collar, tie
    14: dict(r='notch'),  # suprasternal notch
    15: dict(r='back_shoulder', osc=(0.25, 2.5)),  # scratching back
    16: dict(r='elbow_l', l='elbow_r'),  # folding arms
    17: dict(r='chest_l', osc=(0.6, 1.5)),  # dusting clothes
    18: dict(r='behind_r', l='behind_l', behind=True),  # arms behind body
    19: dict(body=(0.6, 0.0), body_osc=(0.6, 0.6)),  # moving torso
    20: dict(body=(0.0, -0.45), shoulders=-0.15),  # sitting straight
    21: dict(r='upper_arm_l', osc=(0.25, 2.5)),  # scratching arms
    22: dict(r='hands_mid', l='hands_mid', osc=(0.25, 2.0)),  # rubbing hands
    23: dict(r='hands_low', l='hands_low'),  # crossing fingers
    24: dict(r='steeple', l='steeple'),  # minaret gesture
    25: dict(r='object', obj=True, osc=(0.35, 0.8)),  # playing with objects
    26: dict(r='hip_back_r', l='hip_back_l', shoulders=-0.2),  # hold back arms
    27: dict(head=(0.0, -0.55)),  # head up
    28: dict(mouth=1.0),  # pressing lips
    29: dict(r='hip_r', l='hip_l'),  # arms akimbo
    30: dict(shoulder_osc=(0.35, 4.0)),  # shaking shoulders
    31: dict(r='gesticulate', osc=(0.7, 1.0), l='gesticulate_l'),  # illustrative body language
}
# Gestures that make a video more likely to be a loss (negative) or a win (positive).
NEGATIVE = (0, 5, 6, 9, 16, 18, 22, 28, 30)
POSITIVE = (19, 20, 24, 26, 27, 29, 31, 2)


@dataclasses.dataclass(frozen=True)
class Subject:
  subject_id: int
  skin: tuple
  shirt: tuple
  hair: tuple
  head_r: float  # fraction of frame height
  width: float  # torso half-width, in head radii
  x: float  # horizontal position, fraction of width


@dataclasses.dataclass(frozen=True)
class View:
  """One camera: background look, zoom and framing."""
  bg: tuple
  board: tuple
  logo: tuple
  zoom: float
  dx: float


def _color(rng, lo, hi):
  return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _make_subject(rng, subject_id):
  skin_base = np.array([[233, 192, 160], [198, 145, 110], [141, 96, 70], [250, 214, 185]])
  skin = skin_base[rng.integers(len(skin_base))] + rng.integers(-12, 12, 3)
  return Subject(subject_id, tuple(int(c) for c in skin.clip(0, 255)), _color(rng, 20, 230),
                 _color(rng, 10, 120), float(rng.uniform(0.10, 0.12)), float(rng.uniform(1.7, 2.3)),
                 float(rng.uniform(0.45, 0.55)))


def _make_view(rng):
  return View(_color(rng, 40, 220), _color(rng, 30, 240), _color(rng, 0, 255),
              float(rng.uniform(0.95, 1.2)), float(rng.uniform(-0.05, 0.05)))


def _ease(p):
  """0 -> 1 -> 0 over a segment: reach in the first quarter, hold, return in the last quarter."""
  if p < 0.25:
    return 0.5 - 0.5 * math.cos(math.pi * p / 0.25)
  if p > 0.75:
    return 0.5 + 0.5 * math.cos(math.pi * (p - 0.75) / 0.25)
  return 1.0


class Renderer:
  """Draws one frame of a subject in a view, given the pose."""

  def __init__(self, width, height, subject: Subject):
    self.w, self.h, self.s = width, height, subject

  def anchors(self, cx, head, shoulder_y, r):
    hx, hy = head
    sw = self.s.width * r
    return {
        'rest_r': (cx + 0.9 * sw, shoulder_y + 3.7 * r), 'rest_l': (cx - 0.9 * sw, shoulder_y + 3.7 * r),
        'hat': (hx + 0.2 * r, hy - 1.3 * r), 'head_side': (hx + 0.9 * r, hy - 0.7 * r),
        'forehead': (hx, hy - 0.6 * r), 'face_r': (hx + 0.35 * r, hy + 0.1 * r),
        'face_l': (hx - 0.35 * r, hy + 0.1 * r), 'eye_r': (hx + 0.35 * r, hy - 0.15 * r),
        'eye_l': (hx - 0.35 * r, hy - 0.15 * r), 'cheek': (hx + 0.6 * r, hy + 0.25 * r),
        'ear': (hx + 1.05 * r, hy), 'mouth': (hx + 0.1 * r, hy + 0.5 * r), 'chin': (hx, hy + 0.95 * r),
        'neck': (hx + 0.35 * r, hy + 1.35 * r), 'hair_back': (hx + 0.7 * r, hy - 1.0 * r),
        'collar_r': (cx + 0.35 * r, shoulder_y + 0.2 * r), 'collar_l': (cx - 0.35 * r, shoulder_y + 0.2 * r),
        'notch': (cx, shoulder_y + 0.35 * r), 'back_shoulder': (cx - 0.5 * sw, shoulder_y - 0.8 * r),
        'elbow_l': (cx - 0.8 * sw, shoulder_y + 2.0 * r), 'elbow_r': (cx + 0.8 * sw, shoulder_y + 2.0 * r),
        'chest_l': (cx - 0.4 * sw, shoulder_y + 1.6 * r), 'behind_r': (cx + 0.7 * sw, shoulder_y + 2.5 * r),
        'behind_l': (cx - 0.7 * sw, shoulder_y + 2.5 * r), 'upper_arm_l': (cx - 1.05 * sw, shoulder_y + 1.2 * r),
        'hands_mid': (cx, shoulder_y + 3.3 * r), 'hands_low': (cx, shoulder_y + 4.0 * r),
        'steeple': (cx, shoulder_y + 2.2 * r), 'object': (cx + 0.5 * sw, shoulder_y + 3.0 * r),
        'hip_back_r': (cx + 1.3 * sw, shoulder_y + 3.6 * r), 'hip_back_l': (cx - 1.3 * sw, shoulder_y + 3.6 * r),
        'hip_r': (cx + 1.05 * sw, shoulder_y + 3.4 * r), 'hip_l': (cx - 1.05 * sw, shoulder_y + 3.4 * r),
        'gesticulate': (cx + 1.2 * sw, shoulder_y + 1.5 * r),
        'gesticulate_l': (cx - 1.0 * sw, shoulder_y + 2.2 * r),
    }

  def draw(self, view: View, pose) -> np.ndarray:
    """pose None: the empty room (before the player sits down)."""
    w, h, s = self.w, self.h, self.s
    img = Image.new('RGB', (w, h), view.bg)
    d = ImageDraw.Draw(img)
    # Sponsor board: a grid of logos.
    step = max(8, int(h * 0.18))
    for yy in range(0, int(h * 0.7), step):
      for xx in range((yy // step % 2) * step // 2, w, step):
        d.rectangle([xx + 2, yy + 2, xx + step * 0.6, yy + step * 0.35], fill=view.board)
        d.ellipse([xx + step * 0.65, yy + 3, xx + step * 0.9, yy + step * 0.3], fill=view.logo)
    if pose is None:
      d.rectangle([0, h * 0.86, w, h], fill=(110, 80, 50))
      d.rectangle([0, h * 0.86, w, h * 0.875], fill=(150, 115, 80))
      return np.asarray(img)
    r = s.head_r * h * view.zoom
    cx = w * (s.x + view.dx) + pose['body'][0] * r
    shoulder_y = h * 0.5 + (view.zoom - 1) * h * 0.1 + pose['body'][1] * r - pose['shoulders'] * r * 0.5
    head = (cx + pose['head'][0] * r, shoulder_y - 1.55 * r + pose['head'][1] * r
            + pose['shoulders'] * r * 0.4)
    sw = s.width * r * (1 + 0.08 * pose['breathe'])
    anchors = self.anchors(cx, head, shoulder_y, r)
    hands = [self._hand(anchors, pose, side) for side in ('r', 'l')]
    shoulders = [(cx + sw, shoulder_y), (cx - sw, shoulder_y)]
    arm_w = max(2, int(0.7 * r))  # an upper arm is about half a head wide
    sleeve = tuple(int(c * 0.6) for c in s.shirt)  # darker than the torso, so arms show in front of it
    if pose['behind']:
      for sh, hd in zip(shoulders, hands):
        self._arm(d, sh, hd, r, arm_w, sleeve)
    # Torso and neck.
    d.polygon([(cx - sw, shoulder_y), (cx + sw, shoulder_y), (cx + sw * 1.05, h), (cx - sw * 1.05, h)],
              fill=s.shirt)
    d.rectangle([cx - 0.3 * r, head[1] + 0.7 * r, cx + 0.3 * r, shoulder_y + 0.2 * r], fill=s.skin)
    d.polygon([(cx - 0.35 * r, shoulder_y), (cx + 0.35 * r, shoulder_y), (cx, shoulder_y + 0.6 * r)],
              fill=s.skin)
    # Head: face, hair, eyes, mouth.
    hx, hy = head
    d.ellipse([hx - r, hy - 1.1 * r, hx + r, hy + 1.0 * r], fill=s.skin)
    d.chord([hx - 1.05 * r, hy - 1.2 * r, hx + 1.05 * r, hy + 0.2 * r], 180, 360, fill=s.hair)
    for ex in (-0.38, 0.38):
      d.ellipse([hx + ex * r - 0.1 * r, hy - 0.2 * r, hx + ex * r + 0.1 * r, hy - 0.02 * r], fill=(30, 30, 30))
    mw = 0.35 * r * (1 - 0.45 * pose['mouth'])
    mh = max(1.0, 0.06 * r + 0.12 * r * pose['mouth'])
    d.rectangle([hx - mw, hy + 0.45 * r - mh / 2, hx + mw, hy + 0.45 * r + mh / 2],
                fill=(150 - int(60 * pose['mouth']), 50, 50))
    # Table in front of the lower torso.
    d.rectangle([0, h * 0.86, w, h], fill=(110, 80, 50))
    d.rectangle([0, h * 0.86, w, h * 0.875], fill=(150, 115, 80))
    if not pose['behind']:
      for sh, hd in zip(shoulders, hands):
        self._arm(d, sh, hd, r, arm_w, sleeve)
    if pose['obj']:
      ox, oy = hands[0]
      d.rectangle([ox - 0.25 * r, oy - 1.0 * r, ox + 0.25 * r, oy + 0.2 * r], fill=(40, 120, 220))
    for hd in hands:
      d.ellipse([hd[0] - HAND * r, hd[1] - HAND * r, hd[0] + HAND * r, hd[1] + HAND * r], fill=s.skin)
    return np.asarray(img)

  def _hand(self, anchors, pose, side):
    rest = anchors[f'rest_{side}']
    target = pose.get(side)
    if target is None:
      return rest
    t = anchors[target]
    e = pose['env']
    return (rest[0] + e * (t[0] - rest[0]) + pose['osc'][0], rest[1] + e * (t[1] - rest[1]) + pose['osc'][1])

  @staticmethod
  def _arm(d, shoulder, hand, r, width, color):
    # Elbow: hang the joint below the line shoulder->hand, as a relaxed arm does.
    mx, my = (shoulder[0] + hand[0]) / 2, (shoulder[1] + hand[1]) / 2
    dist = math.hypot(hand[0] - shoulder[0], hand[1] - shoulder[1])
    bend = max(0.0, (5.2 * r) ** 2 / 4 - dist ** 2 / 4) ** 0.5
    ex = mx + (0.6 if shoulder[0] > hand[0] - 1e-6 else -0.6) * bend * 0.7
    ey = my + bend * 0.5
    d.line([shoulder, (ex, ey), hand], fill=color, width=width, joint='curve')


def _pose(rng_state, t, seg, r_scale=1.0):
  """Pose at frame t: idle sway plus the active segment's gesture (seg = (start, end, class) or None)."""
  idle = rng_state
  pose = dict(body=(0.15 * math.sin(t * idle[0]) + 0.05 * math.sin(t * idle[1]), 0.05 * math.sin(t * idle[2])),
              head=(0.08 * math.sin(t * idle[3]), 0.05 * math.sin(t * idle[1] * 1.3)),
              shoulders=0.0, mouth=0.0, breathe=0.0, behind=False, obj=False, env=0.0, osc=(0.0, 0.0),
              r=None, l=None)
  if seg is None:
    return pose
  start, end, cls = seg
  g = GESTURES[cls]
  p = (t - start) / max(1, end - start)
  e = _ease(p)
  sec = (t - start) / FPS
  pose['env'] = e
  pose['r'], pose['l'] = g.get('r'), g.get('l')
  pose['behind'], pose['obj'] = g.get('behind', False), g.get('obj', False) and e > 0.5
  amp, hz = g.get('osc', (0.0, 0.0))
  pose['osc'] = (amp * e * math.cos(2 * math.pi * hz * sec), amp * e * math.sin(2 * math.pi * hz * sec))
  bx, by = g.get('body', (0.0, 0.0))
  bamp, bhz = g.get('body_osc', (0.0, 0.0))
  pose['body'] = (pose['body'][0] + e * bx * (math.sin(2 * math.pi * bhz * sec) if bamp else 1.0),
                  pose['body'][1] + e * by)
  hx, hy = g.get('head', (0.0, 0.0))
  pose['head'] = (pose['head'][0] + e * hx, pose['head'][1] + e * hy)
  samp, shz = g.get('shoulder_osc', (0.0, 0.0))
  pose['shoulders'] = e * g.get('shoulders', 0.0) + e * samp * math.sin(2 * math.pi * shz * sec)
  pose['mouth'] = e * g.get('mouth', 0.0)
  pose['breathe'] = e * g.get('breathe', 0.0) * (0.5 + 0.5 * math.sin(2 * math.pi * 0.5 * sec))
  return pose


def _scale_osc(pose, r):
  pose = dict(pose)
  pose['osc'] = (pose['osc'][0] * r, pose['osc'][1] * r)
  return pose


def _class_probs(emotion: int) -> np.ndarray:
  """Mildly long-tailed class frequencies, tilted towards the emotion's gestures."""
  p = 1.0 / np.arange(1, 33) ** 0.5
  p = p[np.random.default_rng(1234).permutation(32)]  # fixed, seed-independent tail order
  boost = POSITIVE if emotion == 1 else NEGATIVE
  p[list(boost)] *= 3.0
  return p / p.sum()


def encode_frames(out, stream, frames):
  """Encodes RGB frames (pts 0, 1, ...) into an open PyAV stream of `out`, then flushes the encoder."""
  for i, rgb in enumerate(frames):
    frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
    frame.pts = i
    for packet in stream.encode(frame):
      out.mux(packet)
  for packet in stream.encode():
    out.mux(packet)


def _write_video(path, frames_iter, width, height, codec='mpeg4', container_options=None):
  """Encodes RGB frames to an mp4 at FPS. codec 'mpeg4' (default) or 'h264'.

  mpeg4 is FFmpeg's own MPEG-4 part 2 encoder at qscale 3: bit-exact for the same frames in any process.
  libx264 was not (the same frames gave different bytes depending on which process encoded them), so
  'h264', encoded as a camera or YouTube would (GOP 2 s, B-frames, CRF 23), is for benchmarks only.
  """
  tmp = path + '.partial'
  with av.open(tmp, mode='w', format='mp4', options=container_options or {}) as out:
    stream = out.add_stream('libx264' if codec == 'h264' else 'mpeg4', rate=FPS)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    stream.thread_count = 1
    if codec == 'h264':
      stream.options = {'crf': '23', 'preset': 'veryfast', 'g': '50', 'bf': '3'}
    else:
      stream.codec_context.gop_size = 50
      stream.codec_context.flags |= av.codec.context.Flags.qscale
      stream.codec_context.global_quality = 3 * 118  # qscale 3 (FF_QP2LAMBDA = 118)
    encode_frames(out, stream, frames_iter)
  os.replace(tmp, path)


def _render_video(spec):
  subject, views, segs, cut, frames = spec['subject'], spec['views'], spec['segs'], spec['cut'], spec['frames']
  width, height = spec['width'], spec['height']
  noise = np.random.default_rng(spec['noise_seed']).normal(0, 3.0, (8, height, width, 3)).astype(np.float32)
  renderer = Renderer(width, height, subject)
  seg_at = np.full(frames, -1)
  for i, (a, b, _) in enumerate(segs):
    seg_at[a:b + 1] = i

  def frame_iter():
    for f in range(frames):
      view = views[1] if cut is not None and f >= cut else views[0]
      seg = segs[seg_at[f]] if seg_at[f] >= 0 else None
      r = subject.head_r * height * view.zoom
      pose = None if f < spec['intro'] else _scale_osc(_pose(spec['idle'], f, seg), r)
      img = renderer.draw(view, pose).astype(np.float32)
      fade = (f - spec['intro'] + 1) / 9  # the player appears over 8 frames: walking in is not a cut
      if spec['intro'] and 0 < fade < 1:
        img = fade * img + (1 - fade) * renderer.draw(view, None)
      img += noise[f % 8] + spec['flicker'] * math.sin(f * 0.7)
      yield np.clip(img, 0, 255).astype(np.uint8)

  _write_video(spec['path'], frame_iter(), width, height, spec['codec'])


def generate(out_dir: str, subjects: int = 8, videos_per_subject: int = 2, frames: int = 500,
             width: int = 320, height: int = 180, unlabelled: int = 2, cut_prob: float = 0.4,
             static_prob: float = 0.3, seed: int = 0, test_fraction: float = 0.375, workers: int = 0,
             codec: str = 'mpeg4', venues: int = 4, players: int = 0, player_videos: int = 2) -> dict:
  """Writes a sample manual_dir to out_dir. Returns the ground truth it also saves as sample_truth.json.

  players: people in unlabelled videos only (player_videos each, subject ids from PLAYER_ID_BASE, in
  neither split of the protocol), as iMiGUE-3K has 332 players where iMiGUE labels 72. They feed the
  pretraining records only, and have a random stream of their own: the labelled videos are the same
  bytes with or without them.
  """
  if width % 2 or height % 2:
    raise ValueError(f'width and height must be even for H.264, got {width}x{height}')
  official = json.load(open(labels_lib.PROTOCOL_JSON))['mg_recognition']
  n_test = max(1, int(round(subjects * test_fraction)))
  if subjects - n_test > len(official['train_subject_ids']) or n_test > len(official['test_subject_ids']):
    raise ValueError(
        f'subjects={subjects} with test_fraction={test_fraction}: {subjects - n_test} train and {n_test} test '
        f'subjects, but the official protocol has {len(official["train_subject_ids"])} train and '
        f'{len(official["test_subject_ids"])} test subjects')
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(out_dir, 'videos'), exist_ok=True)
  raw_of = {v: k for k, v in labels_lib.read_classes().items()}  # label index -> raw class
  # Subject ids from the official protocol, so its cross-subject split applies as it is.
  subject_ids = (official['train_subject_ids'][:subjects - n_test] + official['test_subject_ids'][:n_test])
  rows, videos, specs, truth = [], [], [], {'videos': {}}
  # Press rooms: each has a backdrop and two cameras; a video is filmed in one of them.
  venue_rng = np.random.default_rng((seed, 7))
  venue_views = [(_make_view(venue_rng), _make_view(venue_rng)) for _ in range(venues)]
  # (random stream, subject id, labelled videos, videos in all) per person
  player_rng = np.random.default_rng((seed, 11))
  people = [(rng, sid, videos_per_subject, videos_per_subject + (1 if si < unlabelled else 0))
            for si, sid in enumerate(subject_ids)]
  people += [(player_rng, PLAYER_ID_BASE + i, 0, player_videos) for i in range(players)]
  vid_num = 0
  for rng, sid, n_labelled, n_videos in people:
    subject = _make_subject(rng, sid)
    for v in range(n_videos):
      vid_num += 1
      vid = str(vid_num)
      labelled = v < n_labelled
      emotion = int(rng.integers(2))
      probs = _class_probs(emotion)
      # Some videos open on the empty room (a static stretch), then: idle gap, gesture, idle gap, ...
      intro = int(rng.integers(70, 110)) if rng.random() < static_prob else 0
      segs, t = [], intro + int(rng.integers(10, 30))
      while True:
        length = int(rng.integers(20, 50))
        if t + length + 5 >= frames:
          break
        segs.append((t, t + length - 1, int(rng.choice(32, p=probs))))
        t += length + int(rng.integers(8, 35))
      views = list(venue_views[int(rng.integers(venues))]) if venues else [_make_view(rng), _make_view(rng)]
      cut = int(rng.integers(frames // 4, 3 * frames // 4)) if rng.random() < cut_prob else None
      if cut is not None and segs:  # cut in an idle gap, never inside a gesture
        gaps = [(a[1] + 3, b[0] - 3) for a, b in zip(segs, segs[1:]) if b[0] - a[1] > 8]
        cut = int(rng.integers(*gaps[int(rng.integers(len(gaps)))])) if gaps else None
      specs.append(dict(path=os.path.join(out_dir, 'videos', f'{vid}.mp4'), subject=subject, views=views,
                        segs=segs, cut=cut, intro=intro, idle=rng.uniform(0.02, 0.09, size=4),
                        flicker=float(rng.uniform(0.0, 1.5)), frames=frames, width=width, height=height,
                        noise_seed=int(rng.integers(2**31)), codec=codec))
      wl = 'Win' if emotion else 'Lose'
      videos.append((vid, sid, wl))
      for li, (a, b, c) in enumerate(segs if labelled else [], 1):
        rows.append([vid, li, f'{a / FPS:.4f}', a, f'{b / FPS:.4f}', b, raw_of[c], sid, 'F', 'Nowhere', wl])
      truth['videos'][vid] = {'subject_id': sid, 'emotion': emotion, 'labelled': labelled,
                              'num_frames': frames, 'cuts': [cut] if cut is not None else [],
                              'static': [0, intro],  # frames [0, intro) show the empty room
                              'segments': [[a, b, c] for a, b, c in segs]}
  # Rendering is a pure function of each spec: the pool size changes nothing but the speed.
  n = min(workers or os.cpu_count() or 1, len(specs))
  if n > 1:
    with multiprocessing.get_context('spawn').Pool(n) as pool:
      pool.map(_render_video, specs)
  else:
    for spec in specs:
      _render_video(spec)
  with open(os.path.join(out_dir, 'labels.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['video_id', 'label_id', 'start_time', 'start_frame', 'end_time', 'end_frame', 'class',
                'subject_id', 'subject_gender', 'subject_nationality', 'win_or_lose'])
    w.writerows(rows)
  with open(os.path.join(out_dir, 'videos.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['video_id', 'subject_id', 'win_or_lose'])
    w.writerows(videos)
  # Emotion split: half of the labelled videos of each emotion for training, the rest for test.
  lab = [v for v in truth['videos'] if truth['videos'][v]['labelled']]
  emo_train, emo_test = [], []
  for e in (0, 1):
    ids = [int(v) for v in lab if truth['videos'][v]['emotion'] == e]
    emo_train += ids[:len(ids) // 2]
    emo_test += ids[len(ids) // 2:]
  protocol = {
      'source': f'tfds_imigue3k.sample, seed {seed}',
      'mg_recognition': {'protocol': 'cross-subject', 'train_subject_ids': official['train_subject_ids'],
                         'test_subject_ids': official['test_subject_ids']},
      'emotion': {'protocol': 'video-level win(positive)/lose(negative)',
                  'train_video_ids': sorted(emo_train), 'test_video_ids': sorted(emo_test)},
  }
  with open(os.path.join(out_dir, 'protocol.json'), 'w') as f:
    json.dump(protocol, f, indent=1)
  with open(os.path.join(out_dir, 'sample_truth.json'), 'w') as f:
    json.dump(truth, f, indent=1)
  return truth


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('out_dir')
  ap.add_argument('--subjects', type=int, default=8)
  ap.add_argument('--videos_per_subject', type=int, default=2, help='labelled videos per subject')
  ap.add_argument('--unlabelled', type=int, default=2, help='extra unlabelled videos (one per subject)')
  ap.add_argument('--players', type=int, default=0,
                  help='more people, in unlabelled videos only (pretraining data)')
  ap.add_argument('--player_videos', type=int, default=2, help='unlabelled videos per player')
  ap.add_argument('--frames', type=int, default=500, help='frames per video (25 fps)')
  ap.add_argument('--width', type=int, default=320)
  ap.add_argument('--height', type=int, default=180)
  ap.add_argument('--cut_prob', type=float, default=0.4, help='probability that a video has a shot cut')
  ap.add_argument('--static_prob', type=float, default=0.3,
                  help='probability that a video opens on the empty room')
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--venues', type=int, default=4, help='press rooms shared by the videos; 0 = one per video')
  ap.add_argument('--workers', type=int, default=0, help='processes; 0 = every core (same output)')
  a = ap.parse_args(argv)
  t0 = time.time()
  truth = generate(a.out_dir, a.subjects, a.videos_per_subject, a.frames, a.width, a.height, a.unlabelled,
                   a.cut_prob, a.static_prob, a.seed, workers=a.workers, venues=a.venues, players=a.players,
                   player_videos=a.player_videos)
  n_seg = sum(len(v['segments']) for v in truth['videos'].values())
  print(f'wrote {len(truth["videos"])} videos, {n_seg} labelled segments to {a.out_dir} '
        f'in {time.time() - t0:.1f}s')


if __name__ == '__main__':
  main()
