import json

import numpy as np
import pytest
import torch

from utils.cli import UserError
from utils.evaluation import ood as O
from utils.evaluation.typicality import Typicality, from_state, to_state
from utils.model.spec import ModelSpec, Rejection


def brute_auroc(a, b):
    """P(in > out) + P(tie) / 2 over all pairs, by enumeration."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    greater = (a[:, None] > b[None, :]).sum()
    ties = (a[:, None] == b[None, :]).sum()
    return (greater + ties / 2) / (len(a) * len(b))


def test_auroc_extremes_and_chance():
    assert O.auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert O.auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert O.auroc([1, 1, 1], [1, 1]) == 0.5           # all tied


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_enumeration_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 40).astype(float)          # many ties on purpose
    b = rng.integers(0, 5, 30).astype(float)
    assert O.auroc(a, b) == pytest.approx(brute_auroc(a, b))


def test_auroc_of_an_empty_side_is_nan_and_nan_scores_are_refused():
    assert np.isnan(O.auroc([], [1.0]))
    with pytest.raises(ValueError):
        O.auroc([np.nan], [1.0])


def test_scores():
    z = np.array([[2.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    msp = O.score(z, "msp")
    assert msp[0] == pytest.approx(np.exp(2) / (np.exp(2) + 2)) and msp[1] == pytest.approx(1 / 3)
    assert O.score(z, "max_logit").tolist() == [2.0, 10.0]
    assert O.score(z, "energy")[1] == pytest.approx(10 + np.log(3))
    # Temperature softens msp; huge logits do not overflow.
    assert O.score(z, "msp", 2.0)[0] < msp[0]
    assert O.score(np.array([[1e6, 0.0]]), "msp")[0] == 1.0
    with pytest.raises(ValueError):
        O.score(z, "entropy")
    with pytest.raises(ValueError):
        O.score(z, "msp", 0.0)


def test_threshold_keeps_the_stated_share_of_right_answers():
    s = np.arange(1, 101) / 100.0                      # 100 right answers
    th = O.choose_threshold(s, keep=0.95)
    assert th.value == pytest.approx(0.06)             # keeps 0.06 ... 1.00: 95 answers
    assert th.kept_on_validation == pytest.approx(0.95) and th.chosen_on_images == 100
    assert O.rejected_share(s, th) == pytest.approx(0.05)
    assert O.choose_threshold(s, keep=1.0).value == pytest.approx(0.01)
    assert O.choose_threshold([], keep=0.95) is None


def test_threshold_with_ties_keeps_at_least_the_target():
    th = O.choose_threshold([0.5] * 10 + [0.9] * 10, keep=0.95)
    assert th.value == 0.5 and th.kept_on_validation == 1.0


def test_threshold_round_trips_through_the_model_description():
    th = O.choose_threshold(np.linspace(0, 1, 50), keep=0.9, kind="energy")
    spec = ModelSpec.create("mobilenetv2", ["a", "b"], (32, 32), rejection=th)
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())), "x").rejection
    assert again == th and again.score == "energy" and again.keep == 0.9


def test_ood_report():
    th = Rejection("msp", 0.5, 0.95, 0.95, 100)
    rep = O.ood_report([0.9, 0.8, 0.4, 0.7], [0.1, 0.6, 0.2], [True, True, True, False], th,
                       "msp")
    assert rep.rejected_unknown == pytest.approx(2 / 3)
    assert rep.kept_right == pytest.approx(2 / 3)
    assert rep.auroc == pytest.approx(brute_auroc([0.9, 0.8, 0.4, 0.7], [0.1, 0.6, 0.2]))
    assert "AUROC" in rep.lines()[0] and "answered 'unknown'" in rep.lines()[1]
    plain = O.ood_report([0.9], [0.1], [True], None, "msp")
    assert plain.threshold is None and "no rejection threshold" in plain.lines()[1]


def test_typicality_catches_what_only_one_block_sees():
    """Three blocks; the unknown images look normal in two and abnormal in one (as noise
    does in a shape network's middle blocks): the lowest block score finds them."""
    gen = torch.Generator().manual_seed(1)

    def blocks(n, odd_block=None):
        out = [torch.randn(n, d, generator=gen) for d in (4, 8, 6)]
        if odd_block is not None:
            out[odd_block] += 6.0
        return out

    t = fitted(blocks(800))
    known, unknown = t(blocks(200)), t(blocks(200, odd_block=1))
    assert O.auroc(known.numpy(), unknown.numpy()) > 0.99
    scores = t.block_scores(blocks(200, odd_block=1))
    assert scores.shape == (200, 3)
    assert scores[:, 1].median() < scores[:, 0].median() - 5
    assert abs(float(t.block_scores(blocks(500)).median(0).values.mean())) < 0.5  # standardised


def test_typicality_statistics_round_trip_and_refuse_damage():
    t = fitted([torch.randn(50, 3, generator=torch.Generator().manual_seed(0))])
    again = from_state(to_state(t), "ckpt.pth")
    x = [torch.randn(5, 3)]
    assert torch.equal(again(x), t(x))
    state = to_state(t)
    state["spread"] = torch.zeros(1)
    with pytest.raises(UserError, match="ckpt.pth: the typicality statistics are damaged"):
        from_state(state, "ckpt.pth")


def fitted(features):
    """A :class:`Typicality` fitted on given pooled features, as ``typicality.fit`` does
    from a network's blocks."""
    means = [x.double().mean(0) for x in features]
    precisions = [torch.linalg.pinv(torch.cov(x.double().T, correction=0)) for x in features]
    raw = Typicality(range(len(features)), means, precisions, torch.zeros(len(features)),
                     torch.ones(len(features)))
    scores = raw.block_scores(features)
    return Typicality(range(len(features)), means, precisions, scores.mean(0),
                      scores.std(0, unbiased=False))
