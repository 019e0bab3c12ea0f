"""core.sg.metrics on a 3×3 accuracy matrix computed by hand."""
import math

import pytest

from core.sg.metrics import summarize

# acc[t][u]: after task t, accuracy on task u. Tasks have 2, 3 and 5 classes.
ACC = [[0.90],
       [0.60, 0.80],
       [0.50, 0.70, 0.85]]
COUNTS = [2, 3, 5]

# By hand:
# A_0 = 0.90
# A_1 = (0.60·2 + 0.80·3) / 5 = (1.2 + 2.4) / 5 = 0.72
# A_2 = (0.50·2 + 0.70·3 + 0.85·5) / 10 = (1.0 + 2.1 + 4.25) / 10 = 0.735
# AIA = (0.90 + 0.72 + 0.735) / 3 = 2.355 / 3 = 0.785
# forgetting task 0 = max(0.90, 0.60) − 0.50 = 0.40; task 1 = max(0.80) − 0.70 = 0.10; mean 0.25
# BWT = ((0.50 − 0.90) + (0.70 − 0.80)) / 2 = −0.25


def test_hand_computed_matrix():
    m = summarize(ACC, COUNTS)
    assert m["per_step"] == pytest.approx([0.90, 0.72, 0.735])
    assert m["aia"] == pytest.approx(0.785)
    assert m["last"] == pytest.approx(0.735)
    assert m["forgetting_per_task"] == pytest.approx([0.40, 0.10])
    assert m["forgetting"] == pytest.approx(0.25)
    assert m["bwt"] == pytest.approx(-0.25)


def test_square_matrix_with_nan_and_class_lists_give_the_same():
    nan = float("nan")
    square = [[0.90, nan, nan], [0.60, 0.80, nan], [0.50, 0.70, 0.85]]
    classes = [[0, 1], [2, 3, 4], [5, 6, 7, 8, 9]]
    assert summarize(square, classes) == summarize(ACC, COUNTS)


def test_forgetting_uses_best_earlier_accuracy_not_first():
    # task 0 improves after task 1 (0.5 → 0.7) and then drops to 0.4: forgetting = 0.7 − 0.4
    m = summarize([[0.5], [0.7, 0.9], [0.4, 0.9, 0.9]], [1, 1, 1])
    assert m["forgetting_per_task"] == pytest.approx([0.3, 0.0])
    assert m["bwt"] == pytest.approx(((0.4 - 0.5) + (0.9 - 0.9)) / 2)


def test_task_aware_variants_and_single_task():
    aware = [[1.0], [0.9, 0.95], [0.8, 0.9, 0.9]]
    m = summarize(ACC, COUNTS, aware)
    # A_2 task-aware = (0.8·2 + 0.9·3 + 0.9·5)/10 = (1.6 + 2.7 + 4.5)/10 = 0.88
    assert m["last_task_aware"] == pytest.approx(0.88)
    assert m["forgetting_task_aware"] == pytest.approx(((1.0 - 0.8) + (0.95 - 0.9)) / 2)
    single = summarize([[0.7]], [4])
    assert single["aia"] == pytest.approx(0.7) and single["forgetting"] is None and single["bwt"] is None


def test_rejects_short_rows_and_nan_below_diagonal():
    with pytest.raises(ValueError):
        summarize([[0.5], [0.5]], [1, 1])
    with pytest.raises(ValueError):
        summarize([[0.5, math.nan], [math.nan, 0.5]], [1, 1])
