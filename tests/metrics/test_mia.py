"""Golden tests for the membership-inference scores, AUC and privleak; expected numbers worked out by hand."""

import math
import zlib

import pytest

from flat_pipeline.metrics.mia import (
    MIA_ATTACKS,
    loss_score,
    mia_auc,
    min_k_plus_plus_score,
    min_k_score,
    privleak,
    zlib_score,
)

LN2 = math.log(2)
LOGPROBS = [math.log(0.5), math.log(0.25)]  # mean NLL = (ln2 + 2 ln2) / 2 = 1.5 ln2


def test_loss_score():
    assert loss_score(LOGPROBS) == pytest.approx(1.5 * LN2, abs=1e-15)


def test_zlib_score_divides_by_compressed_utf8_length():
    text = "Café au lait, café au lait."
    assert zlib_score(LOGPROBS, text) == pytest.approx(1.5 * LN2 / len(zlib.compress(text.encode("utf-8"))))


def test_min_k_drops_eos_and_takes_lowest_fraction():
    logprobs = [-1.0, -5.0, -3.0, -2.0, -4.0, -10.0]  # last is the eos
    # without eos n = 5, int(.4 * 5) = 2 lowest: -5, -4 -> 4.5
    assert min_k_score(logprobs) == pytest.approx(4.5)
    # with eos n = 6, int(2.4) = 2 lowest: -10, -5 -> 7.5
    assert min_k_score(logprobs, exclude_eos=False) == pytest.approx(7.5)
    # k = .5 on n = 5: int(2.5) = 2 -> 4.5
    assert min_k_score(logprobs, k=0.5) == pytest.approx(4.5)


def test_min_k_keeps_at_least_one_token():
    # n = 2 after dropping the eos, int(.8) = 0 -> max(1, 0) = 1 lowest: -7
    assert min_k_score([-2.0, -7.0, -0.5]) == pytest.approx(7.0)


def test_min_k_plus_plus_on_z_scores():
    z = [0.5, -1.5, -0.5, 2.0, -3.0]  # last is the eos
    # n = 4, int(1.6) = 1 lowest: -1.5 -> 1.5
    assert min_k_plus_plus_score(z) == pytest.approx(1.5)
    # n = 5, int(2.0) = 2 lowest: -3, -1.5 -> 2.25
    assert min_k_plus_plus_score(z, exclude_eos=False) == pytest.approx(2.25)


def test_attack_registry():
    assert set(MIA_ATTACKS) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    item = {"logprobs": [-1.0, -5.0, -3.0, -2.0, -4.0, -10.0], "text": "abc", "z_scores": [0.5, -1.5, -0.5, 2.0, -3.0]}
    assert MIA_ATTACKS["loss"](item, 0.4) == pytest.approx(25 / 6)  # (1 + 5 + 3 + 2 + 4 + 10) / 6
    assert MIA_ATTACKS["zlib"](item, 0.4) == pytest.approx(25 / 6 / len(zlib.compress(b"abc")))
    assert MIA_ATTACKS["min_k"](item, 0.4) == pytest.approx(4.5)
    assert MIA_ATTACKS["min_k_plus_plus"](item, 0.4) == pytest.approx(1.5)


def test_auc_orientation():
    # forget has lower loss (members) than holdout: every holdout score ranks above every forget score -> 1
    assert mia_auc([0.1, 0.2], [1.0, 2.0]) == pytest.approx(1.0)
    assert mia_auc([1.0, 2.0], [0.1, 0.2]) == pytest.approx(0.0)
    assert mia_auc([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)  # all ties


def test_auc_needs_both_sides():
    with pytest.raises(ValueError, match="holdout"):
        mia_auc([0.1], [])
    with pytest.raises(ValueError, match="forget"):
        mia_auc([], [0.1])


def test_privleak_sign():
    # AUC 1, ref .5: (0 - .5) / (.5 + 1e-10) * 100 = -100 / (1 + 2e-10) = -99.99999998
    assert privleak(1.0, None) == pytest.approx(-99.99999998, abs=1e-9)
    assert privleak(1.0, 0.5) == privleak(1.0, None)
    assert privleak(0.6, 0.6) == pytest.approx(0.0, abs=1e-12)  # as private as the retain model
    # AUC below ref: (.7 - .5) / .5 * 100 = 40 (over-unlearned)
    assert privleak(0.3, 0.5) == pytest.approx(40.0, abs=1e-6)
    # (.1 - .4) / .4 * 100 = -75
    assert privleak(0.9, 0.6) == pytest.approx(-75.0, abs=1e-6)
