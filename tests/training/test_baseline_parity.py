"""The baselines' losses at parity with open-unlearning's trainers (fixtures/baseline_losses, copied from
shared/parity/baseline-losses; its README there says how open-unlearning's numbers were made), and the papers' forms
that `loss_form: paper` selects.

Every fixture key (GradAscent, GradDiff NLL and KL, NPO, SimNPO, IdkDPO, RMU) runs the project's step function on the
same token ids, with `loss_form: open_unlearning` and the settings taken from open-unlearning's own method_args, on
every batch and both weight settings: the loss within 1e-5 relative, the gradient norm within 1e-4.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import AutoModelForCausalLM

from flat_pipeline.config import ParameterError
from flat_pipeline.prompts import IGNORE_INDEX
from flat_pipeline.training.methods import METHODS, SHARED_DEFAULTS, layer_output, side
from flat_pipeline.training.tracking import log_method_defaults
from flat_pipeline.training.unlearn import UnlearnConfig, frozen_reference

FIXTURES = Path(__file__).parents[1] / "fixtures"
BATCHES = json.loads((FIXTURES / "baseline_losses" / "batches.json").read_text())["batches"]
EXPECTED = json.loads((FIXTURES / "baseline_losses" / "expected.json").read_text())
CASES = [
    (setting, batch, key)
    for setting, by_batch in EXPECTED["losses"].items()
    for batch, by_method in by_batch.items()
    for key in by_method
]


def load(folder: str) -> torch.nn.Module:
    # expected.json names shared/parity/open-unlearning-tiny/models/<name>; the copies are under fixtures/
    path = FIXTURES / "open_unlearning_tiny" / "models" / Path(folder).name
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")


def batch_tensors(name: str) -> dict[str, torch.Tensor]:
    return {
        f"{side_name}_{key}": torch.tensor(BATCHES[name][side_name][key])
        for side_name in ("forget", "template", "retain")
        for key in ("input_ids", "attention_mask", "labels")
    }


def open_unlearning_settings(key: str) -> dict:
    """The project's settings for a fixture key, from open-unlearning's own method_args (gamma, alpha, beta, ...)."""
    method = EXPECTED["methods"][key]
    args = method["open_unlearning"]["method_args"]
    settings = {"method": method["project"]["method"], "loss_form": "open_unlearning", "seed": 0}
    renamed = {"gamma": "forget_weight", "alpha": "retain_weight", "beta": "beta", "delta": "delta"}
    settings.update({ours: float(args[theirs]) for theirs, ours in renamed.items() if theirs in args})
    if "steering_coeff" in args:
        settings["steering_coeff"] = float(args["steering_coeff"])
    if "module_regex" in args:  # model\.layers\.K: our rmu_layer numbers decoder layers as open-unlearning does
        settings["rmu_layer"] = int(args["module_regex"].rsplit(".", 1)[-1])
    return settings


def run_step(setting: str, batch: dict, settings: dict) -> tuple[float, float]:
    models = EXPECTED["models"][setting]
    config = UnlearnConfig(**settings)
    model = load(models["model"])
    model.train()
    reference = frozen_reference(load(models["reference"])) if config.spec.needs_reference else None
    loss, _ = config.spec.step(model, batch, reference, config)
    loss.backward()
    norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None))
    return float(loss.detach()), norm


def test_the_rmu_direction_is_open_unlearnings():
    vector = EXPECTED["rmu_control_vector"]
    drawn = torch.rand(len(vector["direction"]), generator=torch.Generator().manual_seed(vector["seed"]))
    assert drawn.tolist() == vector["direction"]


@pytest.mark.parametrize(("setting", "batch", "key"), CASES)
def test_loss_and_gradient_norm_equal_open_unlearnings(setting, batch, key):
    want = EXPECTED["losses"][setting][batch][key]
    loss, grad_norm = run_step(setting, batch_tensors(batch), open_unlearning_settings(key))
    assert abs(loss - want["loss"]) <= 1e-5 * max(1.0, abs(want["loss"])), (loss, want["loss"])
    assert abs(grad_norm - want["grad_norm"]) <= 1e-4 * want["grad_norm"], (grad_norm, want["grad_norm"])


@pytest.mark.parametrize("key", ["GradDiff_KL", "RMU"])
def test_the_papers_forms_differ_from_open_unlearnings_where_the_fixture_says(key):
    """On `equal` (labelled lengths differ within a side, no padding) with a model moved from its reference, both
    kl and rmu give another number in the paper's form; on `uniform` (every length equal) rmu's forms coincide."""
    settings = open_unlearning_settings(key)
    setting = "model=retain,reference=full"
    want = EXPECTED["losses"][setting]["equal"][key]["loss"]
    paper, _ = run_step(setting, batch_tensors("equal"), {**settings, "loss_form": "paper"})
    assert abs(paper - want) > 1e-3 * abs(want)
    if key == "RMU":
        uniform = EXPECTED["losses"][setting]["uniform"][key]["loss"]
        paper, _ = run_step(setting, batch_tensors("uniform"), {**settings, "loss_form": "paper"})
        assert paper == pytest.approx(uniform, rel=1e-5)


def _per_sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([values[i][mask[i]].mean() for i in range(len(values))]).mean()


@pytest.mark.parametrize("batch_name", ["equal", "padded"])
def test_paper_kl_is_the_per_sequence_mean_over_answer_tokens(batch_name):
    """TOFU's KL term, written out one sequence at a time from full logits: the mean over a sequence's answer tokens
    of KL(reference || model), then the mean over sequences."""
    models = EXPECTED["models"]["model=retain,reference=full"]
    model, reference = load(models["model"]), frozen_reference(load(models["reference"]))
    batch = batch_tensors(batch_name)
    config = UnlearnConfig(method="kl", loss_form="paper", forget_weight=0.0)
    got, _ = config.spec.step(model, batch, reference, config)
    retain = side(batch, "retain")
    with torch.no_grad():
        logits = model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"]).logits[:, :-1]
        ref_logits = reference(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"]).logits[:, :-1]
    per_position = (ref_logits.softmax(-1) * (ref_logits.log_softmax(-1) - logits.log_softmax(-1))).sum(-1)
    want = _per_sequence_mean(per_position.double(), retain["labels"][:, 1:] != IGNORE_INDEX)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_paper_rmu_is_the_per_sequence_mean_of_hidden_distances():
    """WMDP's retain term written out from `output_hidden_states` (entry 1 is decoder layer 0's output): the
    hidden-unit mean squared distance at each answer token, its mean per sequence, then over sequences."""
    models = EXPECTED["models"]["model=retain,reference=full"]
    model, reference = load(models["model"]), frozen_reference(load(models["reference"]))
    batch = batch_tensors("padded")
    config = UnlearnConfig(method="rmu", loss_form="paper", rmu_layer=0, forget_weight=0.0)
    got, _ = config.spec.step(model, batch, reference, config)
    retain = side(batch, "retain")
    with torch.no_grad():
        hidden, hidden_ref = (
            m(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"], output_hidden_states=True)
            .hidden_states[1]
            .double()
            for m in (model, reference)
        )
    want = _per_sequence_mean((hidden - hidden_ref).pow(2).mean(-1), retain["labels"] != IGNORE_INDEX)
    assert float(want) > 0
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_rmu_layer_k_is_the_output_of_decoder_layer_k():
    """open-unlearning's `model.layers.K` hook: our rmu_layer K, equal to hidden_states[K + 1]."""
    model = load(EXPECTED["models"]["model=full,reference=full"]["model"])
    inputs = side(batch_tensors("padded"), "forget")
    with torch.no_grad():
        states = model(**{k: inputs[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
        assert torch.equal(layer_output(model, inputs, 0), states.hidden_states[1])


def test_an_rmu_layer_the_model_lacks_is_named_before_training():
    model = load(EXPECTED["models"]["model=full,reference=full"]["model"])
    config = UnlearnConfig(method="rmu", rmu_layer=2)
    with pytest.raises(ParameterError, match=r"unlearn\.rmu_layer: expected a decoder layer index from 0 to 1"):
        METHODS["rmu"].check_model(model, config)


def test_each_method_has_its_own_defaults_unless_set():
    simnpo, npo = UnlearnConfig(method="simnpo"), UnlearnConfig(method="npo")
    assert (simnpo.beta, simnpo.delta, simnpo.forget_weight) == (4.5, 0.0, 0.125)
    assert (npo.beta, npo.delta, npo.forget_weight) == (0.1, 0.0, 1.0)
    assert UnlearnConfig(method="simnpo", beta=2.0, forget_weight=1.0).beta == 2.0
    with pytest.raises(ParameterError, match=r"unlearn\.loss_form: expected one of paper, open_unlearning"):
        UnlearnConfig(method="kl", loss_form="open-unlearning")


def test_the_methods_own_values_are_logged_where_the_parameters_leave_them_out(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        params = {"method": "simnpo", "beta": 2.0}
        config = UnlearnConfig(**params)
        # an experiment of its own: an earlier test's active experiment id would name one this store lacks
        experiment = mlflow.create_experiment("defaults", artifact_location=(tmp_path / "mlruns").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            log_method_defaults(params, {name: getattr(config, name) for name in SHARED_DEFAULTS})
        logged = mlflow.get_run(run.info.run_id).data.params
    finally:
        mlflow.set_tracking_uri(previous)
    assert logged == {"unlearn.delta": "0.0", "unlearn.forget_weight": "0.125"}
