import math

import pytest

from utils.evaluation import intervals as I


def wilson_by_hand(k, n, z=1.959963984540054):
    """The textbook formula, written out independently of the module."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(96, 100), (21, 24), (1, 3), (150, 153), (5000, 10000),
                                 (7, 30)])
def test_wilson_matches_the_formula(k, n):
    iv = I.wilson(k, n)
    low, high = wilson_by_hand(k, n)
    assert iv.low == pytest.approx(low, abs=1e-12)
    assert iv.high == pytest.approx(high, abs=1e-12)
    assert iv.estimate == k / n and iv.count == n and iv.successes == k


def test_the_issue_example_prints_as_written():
    assert I.format_proportion("top-1", 96, 100) == \
        "top-1 96.0% (95% CI 90.2–98.4%, 100 images)"


def test_bounds_are_exact_at_zero_and_all():
    assert I.wilson(0, 10).low == 0.0
    assert I.wilson(10, 10).high == 1.0
    assert I.wilson(10, 10).low == pytest.approx(wilson_by_hand(10, 10)[0])
    assert I.wilson(0, 0).low == 0.0 and I.wilson(0, 0).high == 1.0


def test_other_confidence_levels_widen_or_narrow():
    assert I.wilson(50, 100, 0.99).half_width > I.wilson(50, 100).half_width \
        > I.wilson(50, 100, 0.8).half_width
    assert I.z_value(0.95) == pytest.approx(1.959963984540054)


@pytest.mark.parametrize("k,n", [(-1, 10), (11, 10), (0, -1)])
def test_impossible_counts_are_refused(k, n):
    with pytest.raises(ValueError):
        I.wilson(k, n)


def test_too_small_is_the_plus_minus_ten_points_rule():
    assert I.too_small(I.wilson(21, 24))           # the issue's 24-image test set
    assert not I.too_small(I.wilson(96, 100))
    assert not I.too_small(I.wilson(30, 30))       # "at least 88.6%" is a measurement
    assert I.too_small(I.wilson(15, 30))
    assert "too few to measure, ±13 points" in I.format_proportion("top-1", 21, 24)


def test_images_needed_is_the_smallest_size_that_always_suffices():
    n = I.images_needed(0.10)
    assert all(not I.too_small(I.wilson(k, n)) for k in range(n + 1))
    assert any(I.too_small(I.wilson(k, n - 1)) for k in range(n))


def test_mcnemar_exact_values():
    assert I.mcnemar_p(0, 0) == 1.0
    assert I.mcnemar_p(5, 0) == pytest.approx(2 / 32)       # 2 * 0.5**5
    assert I.mcnemar_p(3, 3) == 1.0
    assert I.mcnemar_p(10, 0) < 0.01
    assert I.mcnemar_p(6, 1) == pytest.approx(2 * 8 / 128)   # 2 * (1 + 7) / 2**7
    assert I.mcnemar_p(400, 350) == pytest.approx(I.mcnemar_p(350, 400))


def test_epochs_within_noise_paired():
    base = [True] * 90 + [False] * 10
    better = [True] * 100                      # fixes all 10: significant (p = 0.002)
    same_score_other_images = [False] * 5 + [True] * 90 + [False] * 5
    rows = [base, better, same_score_other_images]
    result = I.epochs_within_noise(rows)
    assert result.best_epoch == 2 and result.paired
    assert result.tied == []
    assert "beyond noise" in result.sentence()
    slightly = [True] * 93 + [False] * 7      # 3 more right than base: noise
    result = I.epochs_within_noise([base, slightly])
    assert result.best_epoch == 2 and result.tied == [1]
    assert "within noise of epoch 1" in result.sentence()


def test_a_long_run_counts_its_tied_epochs_instead_of_listing_them():
    """A 95-epoch run had printed 'within noise of epochs 65, 73, 74, ... and 13 more'."""
    rows = [[True] * 90 + [False] * 10] * 20 + [[True] * 92 + [False] * 8]
    sentence = I.epochs_within_noise(rows, epochs=range(60, 81)).sentence()
    assert "within noise of 20 other epochs, from 60 to 79 (McNemar" in sentence
    few = I.epochs_within_noise(rows[-4:], epochs=[7, 8, 9, 10]).sentence()
    assert "within noise of epochs 7, 8, 9 (McNemar" in few


def test_epochs_within_noise_first_best_wins_ties_like_best_pth():
    rows = [[True, False], [True, False]]
    assert I.epochs_within_noise(rows, epochs=[3, 4]).best_epoch == 3


def test_epochs_within_noise_unpaired_fallback():
    result = I.epochs_within_noise(counts=[80, 90, 91, 85], images=100)
    assert result.best_epoch == 3 and not result.paired
    assert result.tied == [2, 4]              # 90 and 85 inside 83.8-95.2; 80 outside


def test_epochs_must_share_their_images():
    with pytest.raises(ValueError):
        I.epochs_within_noise([[True], [True, False]])
