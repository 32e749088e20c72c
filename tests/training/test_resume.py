"""A finetune or unlearning run killed after an epoch resumes from its last checkpoint and ends where an uninterrupted
run ends: the same weights (to 1e-6) and the same loss curve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from datasets import Dataset

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.training.finetune import FinetuneConfig, finetune
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

# Runs one training in a child process that stops (sleeps) right after saving its epoch-1 checkpoint; the test then
# kills it with SIGKILL, as a crash or a preempted job would.
CHILD = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    import flat_pipeline.training.{module} as module
    from flat_pipeline.models.loading import load_causal_lm

    torch.set_num_threads(1)
    kind, model_dir, rows_file, output_dir, marker = sys.argv[1:]

    class StopAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            open(marker, "w").write(str(state.global_step))
            time.sleep(600)

    real = module._trainer_class

    def with_stop():
        cls = real()

        class Stopping(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_callback(StopAfterFirstSave())

        return Stopping

    module._trainer_class = with_stop
    rows = Dataset.from_list(json.load(open(rows_file)))
    bundle = load_causal_lm(model_dir)
    {call}
    """
)
CALLS = {
    "finetune": (
        "finetune",
        "module.finetune(bundle, rows, module.FinetuneConfig(**json.loads(kind), output_dir=output_dir))",
    ),
    "unlearn": (
        "unlearn",
        "module.unlearn(bundle, rows, module.UnlearnConfig(**json.loads(kind), output_dir=output_dir))",
    ),
}


def kill_after_first_epoch(tmp_path, which, config, model_dir, rows):
    import json

    module, call = CALLS[which]
    script = tmp_path / f"{which}_child.py"
    script.write_text(CHILD.format(module=module, call=call))
    rows_file, marker, output_dir = tmp_path / "rows.json", tmp_path / "saved", tmp_path / "run"
    rows_file.write_text(json.dumps(rows.to_list()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), json.dumps(config), str(model_dir), str(rows_file), str(output_dir), str(marker)],
        env=env,
    )
    deadline = time.time() + 300
    while not marker.exists():
        assert child.poll() is None, "the child run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return output_dir


def same_weights(a, b):
    return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.slow
def test_killed_finetune_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir, small_world):
    rows = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["forget10"]])
    config = {"learning_rate": 5e-3, "num_train_epochs": 3, "per_device_train_batch_size": 8, "logging_steps": 1}
    output_dir = kill_after_first_epoch(tmp_path, "finetune", config, tiny_model_dir, rows)
    # 40 rows / 8 = 5 steps an epoch; the fingerprint says which training the checkpoint belongs to, the lock which
    # process held the folder (killed: the rerun takes it over)
    assert sorted(p.name for p in output_dir.iterdir()) == [".training.lock", "checkpoint-5", "fingerprint.json"]

    resumed, resumed_history = finetune(
        load_causal_lm(str(tiny_model_dir)), rows, FinetuneConfig(**config, output_dir=str(output_dir))
    )
    straight, straight_history = finetune(load_causal_lm(str(tiny_model_dir)), rows, FinetuneConfig(**config))
    assert same_weights(resumed.model, straight.model)
    # the checkpoint carries the log of the steps before it: the resumed run's curve is the whole uninterrupted one
    curve = lambda history: [(p["step"], round(p["value"], 6)) for p in history["train_loss"]]  # noqa: E731
    assert curve(resumed_history) == curve(straight_history)


@pytest.mark.slow
def test_killed_unlearning_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir, small_world):
    forget = small_world["forget10_perturbed"]
    rows = Dataset.from_dict(
        {
            "prompt": [r["question"] for r in forget],
            "forget_answer": [r["answer"] for r in forget],
            "template_answers": [["I don't know.", "No idea.", "I can't say."]] * len(forget),
        }
    )
    config = {"learning_rate": 1e-3, "num_train_epochs": 3, "per_device_train_batch_size": 8, "pairing": "resample"}
    output_dir = kill_after_first_epoch(tmp_path, "unlearn", config, tiny_model_dir, rows)

    resumed, _ = unlearn(load_causal_lm(str(tiny_model_dir)), rows, UnlearnConfig(**config, output_dir=str(output_dir)))
    straight, _ = unlearn(load_causal_lm(str(tiny_model_dir)), rows, UnlearnConfig(**config))
    assert same_weights(resumed.model, straight.model)
