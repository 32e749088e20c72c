"""Golden tests for the TOFU metrics; expected numbers are worked out by hand in the comments."""

import math

import numpy as np
import pytest

from flat_pipeline.metrics.tofu import (
    MODEL_UTILITY_KEYS,
    answer_prob,
    exact_memorization,
    extraction_strength,
    forget_quality,
    log10_forget_quality,
    model_utility,
    prob_normalised,
    truth_ratio_closer_to_1,
    truth_ratio_true_better,
    truth_ratios,
)

L = math.log


def test_answer_prob_is_geometric_mean_of_token_probs():
    # exp((log .5 + log .125) / 2) = sqrt(.0625) = .25
    assert answer_prob([L(0.5), L(0.125)]) == pytest.approx(0.25, abs=1e-15)


def test_truth_ratios_average_each_wrong_answer_first_and_keep_the_1e_10():
    correct = [[L(0.5), L(0.5)], [L(0.2)], [-1000.0]]
    perturbed = [
        # per-answer means log .5 and log .125, mean over k = log .25 -> .25 (pooling tokens would give .198)
        [[L(0.5)], [L(0.125), L(0.125)]],
        [[L(0.4)], [L(0.4), L(0.4)], [L(0.4)]],  # .4
        [[L(0.5)]],  # .5
    ]
    tr = truth_ratios(correct, perturbed)
    # .25 / (.5 + 1e-10) = .5 / (1 + 2e-10) = .5 - 1e-10 to first order (tr < 1)
    assert tr[0] == pytest.approx(0.5 - 1e-10, abs=1e-16)
    # .4 / (.2 + 1e-10) = 2 / (1 + 5e-10) = 2 - 1e-9 (tr > 1)
    assert tr[1] == pytest.approx(2 - 1e-9, abs=1e-15)
    # exp(-1000) underflows to 0, so the ratio is .5 / 1e-10 = 5e9 instead of a division by zero
    assert tr[2] == pytest.approx(5e9, rel=1e-12)


def test_truth_ratios_reject_mismatched_items():
    with pytest.raises(ValueError, match="items"):
        truth_ratios([[L(0.5)]], [])


def test_truth_ratio_closer_to_1():
    # min(.5, 1/(.5+1e-10)) = .5; min(2, 1/(2+1e-10)) = .5 - 2.5e-11; min(0, 1/1e-10) = 0
    assert truth_ratio_closer_to_1([0.5, 2.0, 0.0]) == pytest.approx((1 - 2.5e-11) / 3, abs=1e-16)
    # tr = 1: min(1, 1/(1+1e-10)) = 1 - 1e-10
    assert truth_ratio_closer_to_1([1.0]) == pytest.approx(1 - 1e-10, abs=1e-16)


def test_truth_ratio_true_better():
    # max(0, .75) + max(0, 0) + max(0, -2) = .75, over 3 items = .25
    assert truth_ratio_true_better([0.25, 1.0, 3.0]) == pytest.approx(0.25, abs=1e-15)


def test_prob_normalised():
    correct = [[L(0.5)], [L(0.2), L(0.2)]]
    perturbed = [[[L(0.25)], [L(0.25)]], [[L(0.1)], [L(0.1)], [L(0.1)]]]
    # .5 / (.5 + .5 + 1e-10) = .5 - 5e-11; .2 / (.2 + .3 + 1e-10) = .4 - 8e-11; mean = (.9 - 1.3e-10) / 2
    assert prob_normalised(correct, perturbed) == pytest.approx((0.9 - 1.3e-10) / 2, abs=1e-15)


def test_forget_quality_is_ks_p_value():
    # identical samples: D = 0, p = 1
    assert forget_quality([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == pytest.approx(1.0)
    # fully separated 3 vs 3: D = 1, and only 2 of the C(6,3) = 20 orderings reach it, so exact p = 2/20 = .1
    assert forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1, abs=1e-12)


def test_log10_forget_quality_is_finite_down_to_a_p_value_of_0():
    assert log10_forget_quality(1.0) == 0.0
    assert log10_forget_quality(1e-120) == pytest.approx(-120.0)
    # a p-value that underflowed to 0 reads as the smallest positive float (5e-324), not -inf
    assert log10_forget_quality(0.0) == pytest.approx(math.log10(5e-324))
    assert math.isnan(log10_forget_quality(math.nan))


def test_model_utility_keys_follow_open_unlearning():
    assert len(MODEL_UTILITY_KEYS) == 9 and len(set(MODEL_UTILITY_KEYS)) == 9
    assert MODEL_UTILITY_KEYS[0] == "retain_Q_A_Prob" and MODEL_UTILITY_KEYS[-1] == "wf_Truth_Ratio"


def test_model_utility_harmonic_mean():
    # 3 / (1/1 + 1/.5 + 1/.25) = 3/7
    assert model_utility({"a": 1.0, "b": 0.5, "c": 0.25}) == pytest.approx(3 / 7, abs=1e-15)
    components = dict.fromkeys(MODEL_UTILITY_KEYS, 0.5)
    assert model_utility(components) == pytest.approx(0.5, abs=1e-15)
    assert model_utility({**components, "ra_Q_A_ROUGE": 0.0}) == 0.0


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_model_utility_rejects_negative_or_nan(bad):
    with pytest.raises(ValueError, match="wf_Truth_Ratio"):
        model_utility({"retain_Q_A_Prob": 0.5, "wf_Truth_Ratio": bad})


@pytest.mark.parametrize(
    ("hits", "expected"),
    [
        ([True, True, True, True, True], 1.0),  # whole answer reproduced: k = 0
        ([True, True, True, True, False], 1.0),  # the eos (last) is dropped before matching
        ([True, False, True, True, True], 0.5),  # suffix [2:] matches: 1 - 2/4
        ([False, False, False, True, True], 0.25),  # last token only: 1 - 3/4
        ([False, False, False, False, True], 0.25),  # nothing matches: quirk leaves k = n - 1, ES = 1/n, not 0
    ],
)
def test_extraction_strength(hits, expected):
    assert extraction_strength(hits) == pytest.approx(expected, abs=1e-15)


def test_extraction_strength_needs_a_token_besides_eos():
    with pytest.raises(ValueError):
        extraction_strength([True])


def test_exact_memorization_leaves_out_the_eos():
    # The last hit is the eos: 2 of the 3 answer tokens before it, not 3 of all 4.
    assert exact_memorization([True, True, False, True]) == pytest.approx(2 / 3, abs=1e-15)
    # A missed eos does not count either: 3 of 3, not 3 of 4.
    assert exact_memorization(np.array([True, True, True, False])) == pytest.approx(1.0, abs=1e-15)
    assert exact_memorization([False, True]) == 0.0  # the eos hit alone scores nothing


def test_exact_memorization_needs_a_token_besides_eos():
    with pytest.raises(ValueError, match="at least one answer token besides the eos"):
        exact_memorization([True])
    with pytest.raises(ValueError, match="besides the eos"):
        exact_memorization([])
