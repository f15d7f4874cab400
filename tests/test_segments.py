"""Scores of micro-gesture spotting on hand-made cases with known answers (mgjax/evals/segments.py)."""

import numpy as np
import pytest

from mgjax.evals import segments
from mgjax.evals.segments import Segment


def test_tiou_is_overlap_over_span():
  assert segments.tiou((0, 10), (5, 15)) == pytest.approx(5 / 15)
  assert segments.tiou((0, 10), (2, 4)) == pytest.approx(0.2)
  assert segments.tiou((0, 5), (5, 10)) == 0.0  # touching, not overlapping
  assert segments.tiou((0, 5), (7, 10)) == 0.0


def test_miga_f1_matches_one_to_one_and_needs_the_class_and_more_than_the_threshold():
  truth = [Segment('v1', 0, 10, 1), Segment('v1', 20, 30, 2), Segment('v2', 0, 10, 1)]
  detections = [Segment('v1', 1, 11, 1, 0.9),   # tIoU 9/11 with the first segment: correct
                Segment('v1', 0, 10, 1, 0.8),   # the same segment again: counted once, so wrong
                Segment('v1', 20, 30, 3, 0.7),  # the right place, another class: wrong
                Segment('v2', 7, 17, 1, 0.6)]   # tIoU 3/17, under 0.3: wrong
  r = segments.miga_f1(detections, truth)
  assert (r['true_positives'], r['detections'], r['segments']) == (1, 4, 3)
  assert r['precision'] == pytest.approx(1 / 4) and r['recall'] == pytest.approx(1 / 3)
  assert r['f1'] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
  # The threshold must be exceeded: tIoU exactly 0.3 is not a detection in MiGA's rule.
  assert segments.miga_f1([Segment('v', 0, 3, 0)], [Segment('v', 0, 10, 0)])['true_positives'] == 0
  assert segments.miga_f1([Segment('v', 0, 3.1, 0)], [Segment('v', 0, 10, 0)])['true_positives'] == 1
  assert segments.miga_f1([], truth)['f1'] == 0.0


def test_average_precision_by_the_activitynet_rule():
  truth = [Segment('v1', 0, 10, 0), Segment('v1', 20, 30, 0)]
  dets = [Segment('v1', 0, 10, 0, 0.9), Segment('v1', 50, 60, 0, 0.8), Segment('v1', 20, 30, 0, 0.7)]
  # Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: the envelope gives 1/2 x 1 + 1/2 x 2/3.
  assert segments.average_precision(dets, truth, 0.5) == pytest.approx(5 / 6)
  assert segments.average_precision(dets[::-1], truth, 0.5) == pytest.approx(5 / 6)  # order by score
  # A detection takes the unmatched segment of highest tIoU, not the first one over the threshold:
  # (2, 12) overlaps (0, 10) by 8/12 and (2, 12) by 1; had it taken (0, 10), the detection (0, 9) would
  # be left (2, 12) at 7/12, under 0.6.
  truth = [Segment('v', 0, 10, 0), Segment('v', 2, 12, 0)]
  dets = [Segment('v', 2, 12, 0, 0.9), Segment('v', 0, 9, 0, 0.8)]
  assert segments.average_precision(dets, truth, 0.6) == pytest.approx(1.0)
  # At the threshold exactly it counts (ActivityNet: tIoU >= t).
  assert segments.average_precision([Segment('v', 0, 5, 0)], [Segment('v', 0, 10, 0)], 0.5) == pytest.approx(1.0)
  # Another video's segment never matches.
  assert segments.average_precision([Segment('w', 0, 10, 0)], [Segment('v', 0, 10, 0)], 0.5) == 0.0


def test_mean_ap_averages_the_classes_with_ground_truth():
  truth = [Segment('v', 0, 10, 0), Segment('v', 20, 30, 1)]
  dets = [Segment('v', 0, 10, 0, 0.9), Segment('v', 40, 50, 2, 0.8)]  # class 1 missed; class 2 has no truth
  r = segments.mean_ap(dets, truth, thresholds=(0.5,))
  assert r['per_class@0.5'] == {0: pytest.approx(1.0), 1: 0.0}
  assert r['mAP@0.5'] == pytest.approx(0.5)


def test_decoding_window_scores_into_segments():
  """Runs of windows over the threshold become segments half a hop beyond their first and last centres,
  scored by their mean; overlapping segments of other classes are suppressed, the best kept."""
  centres = 8 + 8 * np.arange(10)  # windows centred every 8 frames from frame 8
  probs = np.zeros((10, 3))
  probs[2:5, 1] = [0.6, 0.9, 0.6]   # class 1 over windows 2-4 (centres 24-40): frames 20 to 44
  probs[7:9, 2] = [0.7, 0.5]        # class 2 over windows 7-8 (centres 64, 72): frames 60 to 76
  probs[3:5, 0] = [0.55, 0.55]      # class 0, frames 28 to 44: inside class 1's run, scored lower
  got = segments.decode('v', probs, centres, hop=8, threshold=0.5, nms_tiou=0.3)
  assert [(s.start, s.end, s.label) for s in got] == [(20, 44, 1), (60, 76, 2)]
  assert [s.score for s in got] == [pytest.approx(0.7), pytest.approx(0.6)]
  per_class = segments.decode('v', probs, centres, hop=8, threshold=0.5, nms_tiou=0.3, class_agnostic=False)
  assert sorted(s.label for s in per_class) == [0, 1, 2]
  assert segments.decode('v', probs, centres, hop=8, threshold=0.95) == []
