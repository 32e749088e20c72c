"""Checkpoint folders are owned by one training at a time, and only whole checkpoints are resumed (issue 25)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest
from datasets import Dataset

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.training.checkpoints import LOCK_FILE, OutputDirBusy, owned_output_dir
from flat_pipeline.training.fingerprint import CheckpointMismatch, checkpoint_to_resume
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

from .test_training_guards import whole_checkpoint

CURRENT = {"config": {"learning_rate": 1e-4}, "training_data": "sha256:a", "start_model": "loaded from /models/a"}


def _fingerprinted(folder):
    checkpoint_to_resume(str(folder), False, CURRENT, "unlearn")  # a start: writes the fingerprint
    return folder


def test_a_second_training_on_a_held_output_dir_is_refused_naming_the_holder(tmp_path):
    with owned_output_dir(str(tmp_path), "unlearn"):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        message = (
            rf"^unlearn.output_dir {tmp_path} is in use by another training \(host {socket.gethostname()}, pid "
            rf"{os.getpid()}, started .+; lock file {tmp_path / LOCK_FILE}\)\. Wait for it to end, or set "
            r"unlearn.output_dir to another folder"
        )
        with pytest.raises(OutputDirBusy, match=message), owned_output_dir(str(tmp_path), "unlearn"):
            pass
        assert (tmp_path / LOCK_FILE).exists()  # the refused one leaves the holder's lock alone
    assert not (tmp_path / LOCK_FILE).exists()  # released at the end


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_log_line(tmp_path, caplog):
    ended = [sys.executable, "-c", "import os; print(os.getpid())"]
    gone = subprocess.run(ended, capture_output=True, text=True, check=True)
    stale = {"host": socket.gethostname(), "pid": int(gone.stdout), "started": "2026-12-07T00:00:00+0000"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING), owned_output_dir(str(tmp_path), "finetune.training"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of a training that is gone (host {stale['host']}, pid {stale['pid']}" in caplog.text


def test_a_lock_held_on_another_host_is_not_taken(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "node-17", "pid": 1, "started": "yesterday"}))
    with (
        pytest.raises(OutputDirBusy, match=r"host node-17, pid 1, started yesterday"),
        owned_output_dir(str(tmp_path), "unlearn"),
    ):
        pass


def test_an_unlearning_on_a_held_folder_stops_before_touching_its_fingerprint(
    tmp_path, tiny_model_dir, forget_templates
):
    _fingerprinted(tmp_path)
    before = (tmp_path / "fingerprint.json").read_text()
    config = UnlearnConfig(method="ga", num_train_epochs=1, per_device_train_batch_size=8, output_dir=str(tmp_path))
    with owned_output_dir(str(tmp_path), "unlearn"), pytest.raises(OutputDirBusy, match="is in use by another"):
        unlearn(load_causal_lm(str(tiny_model_dir)), Dataset.from_list(forget_templates.to_list()), config)
    assert (tmp_path / "fingerprint.json").read_text() == before


@pytest.mark.parametrize(
    ("break_it", "reason"),
    [
        (lambda c: (c / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda c: (c / "trainer_state.json").write_text('{"global_step": 1'), "trainer_state.json cut short"),
        (lambda c: (c / "model.safetensors").unlink(), "no weights file"),
    ],
)
def test_resume_skips_a_checkpoint_a_kill_left_incomplete(tmp_path, caplog, break_it, reason):
    _fingerprinted(tmp_path)
    whole_checkpoint(tmp_path / "checkpoint-5")
    break_it(whole_checkpoint(tmp_path / "checkpoint-10"))
    with caplog.at_level(logging.WARNING):
        assert checkpoint_to_resume(str(tmp_path), True, CURRENT, "unlearn") == str(tmp_path / "checkpoint-5")
    assert f"skipping incomplete checkpoint-10 ({reason}); resuming checkpoint-5" in caplog.text
    assert not (tmp_path / "checkpoint-10").exists()  # deleted: the resumed training writes it again


def test_only_incomplete_checkpoints_stop_the_resume_saying_what_to_do(tmp_path):
    _fingerprinted(tmp_path)
    (tmp_path / "checkpoint-5").mkdir()
    message = (
        rf"^unlearn.output_dir {tmp_path} holds no whole checkpoint to resume: checkpoint-5 \(no weights file\), as a "
        r"training killed while writing it leaves them\. Set unlearn.output_dir to another folder, or "
        r"unlearn.resume=false to start over"
    )
    with pytest.raises(CheckpointMismatch, match=message):
        checkpoint_to_resume(str(tmp_path), True, CURRENT, "unlearn")
    assert checkpoint_to_resume(str(tmp_path), False, CURRENT, "unlearn") is None
    assert not (tmp_path / "checkpoint-5").exists()


def test_a_lock_whose_process_id_was_given_to_another_process_is_taken_over(tmp_path, caplog):
    """After a reboot or in a container, the dead holder's id may belong to a live process (here: this one)."""
    from flat_pipeline.processes import start_time

    reused = {"host": socket.gethostname(), "pid": os.getpid(), "process_started": start_time() - 3600.0,
              "started": "an hour ago"}  # fmt: skip
    (tmp_path / LOCK_FILE).write_text(json.dumps(reused))
    with caplog.at_level(logging.WARNING), owned_output_dir(str(tmp_path), "unlearn"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["process_started"] == start_time()
    assert "taking over the lock of a training that is gone" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the stale lock renamed aside and removed, ours released


def test_another_trainings_folder_keeps_its_incomplete_checkpoints_when_refused(tmp_path):
    _fingerprinted(tmp_path)
    whole_checkpoint(tmp_path / "checkpoint-5")
    (tmp_path / "checkpoint-10").mkdir()
    other = {**CURRENT, "training_data": "sha256:b"}
    with pytest.raises(CheckpointMismatch, match="holds checkpoint-5 of another training"):
        checkpoint_to_resume(str(tmp_path), True, other, "unlearn")
    assert (tmp_path / "checkpoint-10").is_dir()  # not this run's to delete
