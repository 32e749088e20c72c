"""An effective batch that does not depend on the hardware (issue 27): `effective_batch_size` states the examples of
one optimiser step over all processes; the per-device batch and the accumulation follow from the process count."""

from __future__ import annotations

import pytest

from flat_pipeline.config import ParameterError
from flat_pipeline.training.common import batch_record, with_effective_batch
from flat_pipeline.training.finetune import FinetuneConfig
from flat_pipeline.training.unlearn import UnlearnConfig


@pytest.mark.parametrize(
    ("effective", "cap", "processes", "per_device", "accumulation"),
    [
        (32, 32, 1, 32, 1),
        (32, 32, 2, 16, 1),
        (32, 32, 8, 4, 1),
        (32, 8, 1, 8, 4),  # a device takes at most 8: four steps accumulate
        (32, 8, 2, 8, 2),
        (24, 16, 1, 12, 2),  # 24 in steps of at most 16: two of 12
        (30, 8, 1, 6, 5),  # 30 in steps of at most 8: 4 steps would not divide it, 5 of 6 do
    ],
)
def test_the_per_device_batch_and_accumulation_make_the_effective_batch(
    effective, cap, processes, per_device, accumulation
):
    config = with_effective_batch(
        UnlearnConfig(effective_batch_size=effective, per_device_train_batch_size=cap), processes, "unlearn"
    )
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (per_device, accumulation)
    assert batch_record(config, processes)["effective_batch_size"] == effective
    # a launched process derives it again from what the launching one sent: the same answer
    again = with_effective_batch(config, processes, "unlearn")
    assert (again.per_device_train_batch_size, again.gradient_accumulation_steps) == (per_device, accumulation)


def test_without_an_effective_batch_the_settings_are_kept():
    config = FinetuneConfig(per_device_train_batch_size=4, gradient_accumulation_steps=3)
    assert with_effective_batch(config, 2, "finetune.training") is config
    assert batch_record(config, 2) == {"num_processes": 2, "per_device_train_batch_size": 4,
                                       "gradient_accumulation_steps": 3, "effective_batch_size": 24}  # fmt: skip


def test_an_effective_batch_the_processes_cannot_share_is_refused_naming_the_parameters():
    with pytest.raises(ParameterError, match=r"^parameter finetune.training.effective_batch_size: 30 examples per step "
                       r"cannot be shared equally by 4 processes \(finetune.launch.num_processes\); use a multiple "
                       r"of 4$"):  # fmt: skip
        with_effective_batch(FinetuneConfig(effective_batch_size=30), 4, "finetune.training")
    with pytest.raises(ParameterError, match=r"parameter unlearn.effective_batch_size: expected an integer >= 1"):
        UnlearnConfig(effective_batch_size=0)
