"""Progress bars only on a terminal: in a log file (`make run > run.log`) every redraw of a bar would pile up."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from flat_pipeline.generation import greedy_generate
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import encode_example, encode_prompt
from flat_pipeline.scoring import score_candidates
from flat_pipeline.training.common import training_arguments
from flat_pipeline.training.unlearn import UnlearnConfig


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log file"])
def test_scoring_and_generation_show_bars_only_on_a_terminal(tiny_model_dir, small_world, monkeypatch, terminal):
    bundle = load_causal_lm(str(tiny_model_dir))
    rows = small_world["forget10_perturbed"][:2]
    prompts = [encode_prompt(bundle.tokenizer, r["question"]) for r in rows]
    candidates = [
        [encode_example(bundle.tokenizer, r["answer"], r["question"]).input_ids[len(p) :]]
        for r, p in zip(rows, prompts, strict=True)
    ]
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    score_candidates(bundle.model, prompts, candidates, bundle.tokenizer.pad_token_id, progress=True)
    greedy_generate(bundle.model, bundle.tokenizer, prompts, max_new_tokens=2, progress=True)
    assert ("scoring" in stderr.getvalue()) is terminal
    assert ("generating" in stderr.getvalue()) is terminal


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log file"])
def test_the_trainers_bars_only_on_a_terminal_and_pinned_memory_only_with_cuda(tmp_path, monkeypatch, terminal):
    monkeypatch.setattr(sys, "stderr", Terminal() if terminal else io.StringIO())
    arguments = training_arguments(UnlearnConfig(), str(tmp_path))
    assert arguments.disable_tqdm is not terminal
    assert arguments.dataloader_pin_memory is torch.cuda.is_available()  # torch warns about it on CPU
