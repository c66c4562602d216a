import numpy as np
import pytest
from matplotlib.figure import Figure

from utils.evaluation import calibration as C


def synthetic(n, classes=3, sharpness=1.0, seed=0):
    """Logits whose softmax is calibrated at temperature ``1/sharpness``... by construction:
    labels are *drawn* from softmax(base logits), then the logits are scaled by
    ``sharpness``, so the true temperature is ``sharpness``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 2.0, (n, classes))
    p = C.softmax(base)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return base * sharpness, labels


def test_softmax_rows_sum_to_one_and_survive_huge_logits():
    p = C.softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    assert np.allclose(p.sum(1), 1) and p[0, 0] == 1.0 and np.allclose(p[1], 1 / 3)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_fit_recovers_a_known_temperature(true_t):
    logits, labels = synthetic(4000, sharpness=true_t, seed=1)
    fit = C.fit_temperature(logits, labels)
    assert fit.temperature == pytest.approx(true_t, rel=0.08)
    assert fit.nll_after <= fit.nll_before + 1e-12
    assert not fit.clamped


def test_fit_minimises_nll_on_a_grid():
    logits, labels = synthetic(500, sharpness=2.0, seed=2)
    fit = C.fit_temperature(logits, labels, prior_sigma=None)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 2001))
    best = grid[np.argmin([C.nll(logits, labels, t) for t in grid])]
    assert fit.temperature == pytest.approx(best, rel=0.01)


def test_perfect_or_empty_validation_stays_sane():
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 4.0]])
    fit = C.fit_temperature(logits, [0, 1, 2])
    # Unregularised, NLL keeps falling as T -> 0; the prior stops it well inside the range.
    assert C.T_RANGE[0] < fit.temperature < 1.0
    no_prior = C.fit_temperature(logits, [0, 1, 2], prior_sigma=None)
    assert no_prior.temperature == pytest.approx(C.T_RANGE[0]) and no_prior.clamped
    empty = C.fit_temperature(np.zeros((0, 3)), [])
    assert empty.temperature == 1.0 and empty.images == 0


def test_argmax_is_unchanged_by_temperature():
    logits, _ = synthetic(200, seed=3)
    assert (C.softmax(logits, 0.3).argmax(1) == C.softmax(logits, 7).argmax(1)).all()


def test_ece_by_hand():
    # Two images in bin (0.8, 0.8667], one right: |0.5 - 0.85| = 0.35 with weight 2/3;
    # one image in the last bin, conf 0.95, right: 0.05 with weight 1/3.
    p = np.array([[0.85, 0.15], [0.85, 0.15], [0.95, 0.05]])
    y = np.array([0, 1, 0])
    assert C.ece(p, y) == pytest.approx(0.35 * 2 / 3 + 0.05 / 3)
    b = C.reliability_bins(p, y)
    assert b.counts.sum() == 3 and b.counts[12] == 2 and b.counts[14] == 1


def test_ece_bin_edges_are_right_inclusive():
    b = C.reliability_bins(np.array([[1 / 15 * 8, 1 - 1 / 15 * 8]]), [0], bins=15)
    assert b.counts[7] == 1


def test_ece_zero_for_perfectly_calibrated_bins():
    # 10 images at confidence 0.7, 7 right.
    p = np.tile([0.7, 0.3], (10, 1))
    y = np.array([0] * 7 + [1] * 3)
    assert C.ece(p, y) == pytest.approx(0.0, abs=1e-12)


def test_calibration_lowers_test_ece_of_an_overconfident_model():
    """The acceptance shape of the issue: fitted on validation, scored on a test split."""
    val, yv = synthetic(1000, sharpness=3.0, seed=4)      # over-confident by 3x
    test, yt = synthetic(1000, sharpness=3.0, seed=5)
    fit = C.fit_temperature(val, yv)
    before, after = C.ece(C.softmax(test), yt), C.ece(C.softmax(test, fit.temperature), yt)
    assert fit.temperature > 2
    assert after < before / 2


def test_calibration_does_not_hurt_a_calibrated_model_much():
    val, yv = synthetic(1000, seed=6)
    test, yt = synthetic(1000, seed=7)
    fit = C.fit_temperature(val, yv)
    assert C.ece(C.softmax(test, fit.temperature), yt) <= C.ece(C.softmax(test), yt) + 0.01


def test_reliability_figure_is_a_plain_figure(tmp_path):
    logits, y = synthetic(300, sharpness=2.0, seed=8)
    fig = C.reliability_figure({"before": C.softmax(logits), "after": C.softmax(logits, 2.0)}, y)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    import matplotlib.pyplot as plt
    assert not plt.get_fignums()   # nothing left in pyplot's global state


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        C.fit_temperature(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError):
        C.ece(np.full((2, 2), 0.5), [0, 2])
