"""The start-up parameter check (flat_pipeline.parameters): every environment passes, typos and bad values do not."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from flat_pipeline.config import ParameterError
from flat_pipeline.hooks.preflight import benchmark_method_problems, trajectory_problems
from flat_pipeline.parameters import check_parameters, parameter_problems

PROJECT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ["local", "test", "tofu", "muse_news", "muse_books", "hp", "smollm2"]


def environment_parameters(env: str) -> dict:
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT / "conf"),
        env=env,
        base_env="base",
        default_run_env="local",
        merge_strategy={"parameters": "soft"},
    )
    return loader["parameters"]


@pytest.fixture(scope="module")
def base_params():
    return environment_parameters("local")


def with_override(params: dict, dotted: str, value) -> dict:
    """`params` with one `--params` override applied (a new block or key is created, as Kedro does)."""
    import copy

    changed = copy.deepcopy(params)
    *path, last = dotted.split(".")
    node = changed
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value
    return changed


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_passes(env, monkeypatch):
    monkeypatch.chdir(PROJECT)  # launch.config_file paths are relative to the project root
    params = environment_parameters(env)
    assert parameter_problems(params) == []
    assert benchmark_method_problems(params) == []  # every benchmark method has its entry


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("unlaern.learning_rate", 1e-4, "parameter block 'unlaern' is unknown (did you mean 'unlearn'?)"),
        (
            "data_prep.forget_spilt",
            "forget05",
            "parameter data_prep.forget_spilt: unknown key (did you mean 'forget_split'?)",
        ),
        ("unlearn.learning_rat", 1e-4, "parameter unlearn.learning_rat: unknown key (did you mean 'learning_rate'?)"),
        (
            "finetune.training.num_train_epoch",
            3,
            "parameter finetune.training.num_train_epoch: unknown key (did you mean 'num_train_epochs'?)",
        ),
        (
            "evaluate.metrics",
            ["forget_qualty"],
            "parameter evaluate.metrics: unknown metric 'forget_qualty' (did you mean 'forget_quality'?)",
        ),
        ("unlearn.learning_rate", 0, "parameter unlearn.learning_rate: expected a finite number > 0, got 0"),
        ("unlearn.learning_rate", -1e-4, "parameter unlearn.learning_rate: expected a finite number > 0, got -0.0001"),
        (
            "unlearn.learning_rate",
            float("nan"),
            "parameter unlearn.learning_rate: expected a finite number > 0, got nan",
        ),
        ("unlearn.num_train_epochs", 0, "parameter unlearn.num_train_epochs: expected a finite number > 0, got 0"),
        (
            "unlearn.per_device_train_batch_size",
            0,
            "parameter unlearn.per_device_train_batch_size: expected an integer >= 1, got 0",
        ),
        (
            "finetune.training.learning_rate",
            float("inf"),
            "parameter finetune.training.learning_rate: expected a finite number > 0, got inf",
        ),
        (
            "finetune.training.per_device_train_batch_size",
            0,
            "parameter finetune.training.per_device_train_batch_size: expected an integer >= 1, got 0",
        ),
        (
            "finetune.min_train_exact_match",
            1.5,
            "parameter finetune.min_train_exact_match: expected a finite number >= 0 and <= 1 or null, got 1.5",
        ),
        (
            "benchmark.methods.npo.beta",
            -1.0,
            "parameter benchmark.methods.npo.beta: expected a finite number > 0, got -1.0",
        ),
        (
            "model.tiny_llama.hidden_size",
            95,
            "parameter model.tiny_llama.hidden_size: expected a multiple of num_attention_heads (3), got 95",
        ),
        (
            "model.prompt.format",
            "chat",
            "parameter model.prompt.format: expected one of phi-1_5, Llama-2-chat, hp, completion, chat_template, got "
            "'chat'",
        ),
        (
            "data_prep.source",
            "tofuu",
            "parameter data_prep.source: expected one of synthetic, tofu, hp, muse, got 'tofuu' (did you mean 'tofu'?)",
        ),
        (
            "evaluate.settings.scoring_batch_size",
            0,
            "parameter evaluate.settings.scoring_batch_size: expected an integer >= 1, got 0",
        ),
        (
            "templates.candidates_per_item",
            0,
            "parameter templates.candidates_per_item: expected an integer >= 1, got 0",
        ),
        (
            "templates.generated.shots",
            ["I don't know."],
            "parameter templates.generated.shots: expected null or a list of {question, answer} texts, got",
        ),
        (
            "unlearn.trajectory.metrcs",
            ["mia_min_k"],
            "parameter unlearn.trajectory.metrcs: unknown key (did you mean 'metrics'?)",
        ),
        (
            "unlearn.trajectory.every",
            "epochs",
            "parameter unlearn.trajectory.every: expected 'epoch', a number of optimiser steps or null, got 'epochs' "
            "(did you mean 'epoch'?)",
        ),
        (
            "unlearn.trajectory.metrics",
            ["forget_truth_ration"],
            "parameter unlearn.trajectory.metrics: unknown metric(s) ['forget_truth_ration'] (did you mean "
            "'forget_truth_ratio'?)",
        ),
        ("benchmark.trajectory.every", 0, "parameter benchmark.trajectory.every: expected an integer >= 1 or null"),
        (
            "benchmark.methods.npo.trajectory",
            {"every": "epoch", "metrics": []},
            "parameter benchmark.methods.npo.trajectory.metrics: every='epoch' evaluates nothing without metrics",
        ),
    ],
)
def test_a_typo_or_bad_value_is_named(base_params, dotted, value, message, monkeypatch):
    monkeypatch.chdir(PROJECT)
    problems = parameter_problems(with_override(base_params, dotted, value))
    assert any(message in problem for problem in problems), problems


def test_a_synthetic_world_beyond_its_name_pools_is_refused_before_the_run(base_params):
    """Drawing more distinct names than the pools hold never ended (data_prep.synthetic.n_authors >= 590)."""
    problems = parameter_problems(with_override(base_params, "data_prep.synthetic.n_authors", 600))
    assert any("data_prep.synthetic.n_authors" in p and "can be at most 582" in p for p in problems), problems


def test_benchmark_methods_must_match_the_pipeline(base_params):
    methods = dict(base_params["benchmark"]["methods"])
    methods.pop("npo")
    methods["npo2"] = {"method": "npo"}
    params = with_override(base_params, "benchmark.methods", methods)
    params = with_override(params, "benchmark.leaderboard.sort_by", "forget_qualty")
    problems = benchmark_method_problems(params)
    assert problems[0] == "parameter benchmark.methods: no entry for method(s) ['npo'] of the benchmark pipeline"
    assert problems[1].startswith("parameter benchmark.methods: ['npo2'] not in the benchmark pipeline, which runs")
    sort_problem = "parameter benchmark.leaderboard.sort_by: expected one of the columns ['forget_quality',"
    assert problems[2].startswith(sort_problem)
    assert problems[2].endswith("got 'forget_qualty'")


def test_every_problem_is_reported_at_once(base_params, monkeypatch):
    monkeypatch.chdir(PROJECT)
    params = with_override(base_params, "unlearn.learning_rate", 0)
    params = with_override(params, "finetune.training.num_train_epochs", 0)
    params = with_override(params, "unlaern.seed", 1)
    with pytest.raises(ParameterError, match=r"^3 parameter problem\(s\); nothing was run:\n  - parameter block"):
        check_parameters(params)


def test_every_problem_of_a_block_is_listed_once_and_only_under_its_own_name(base_params, monkeypatch):
    """Three bad unlearn settings: all three named, each once; not again under benchmark.methods.<m> or
    tune.space.methods.<m>, blocks the user did not touch (issue 25)."""
    monkeypatch.chdir(PROJECT)
    params = with_override(base_params, "unlearn.learning_rate", 0)
    params = with_override(params, "unlearn.per_device_train_batch_size", 0)
    params = with_override(params, "unlearn.divergense", "kl")
    params = with_override(params, "finetune.training.num_train_epochs", 0)
    params = with_override(params, "finetune.training.adam_beta1", 1.5)
    problems = parameter_problems(params)
    expected = [
        "parameter finetune.training.adam_beta1: expected a finite number >= 0 and < 1, got 1.5",
        "parameter finetune.training.num_train_epochs: expected a finite number > 0, got 0",
        "parameter unlearn.divergense: unknown key (did you mean 'divergence'?); known: ",
        "parameter unlearn.learning_rate: expected a finite number > 0, got 0",
        "parameter unlearn.per_device_train_batch_size: expected an integer >= 1, got 0",
    ]
    assert len(problems) == len(expected), problems
    assert all(any(p.startswith(e) for p in problems) for e in expected), problems


def test_a_rule_across_two_settings_is_judged_on_the_settings_as_given(base_params, monkeypatch):
    """code_compat needs score=prob: given both, with another setting wrong, only that one is named."""
    monkeypatch.chdir(PROJECT)
    params = with_override(base_params, "unlearn.code_compat", True)
    params = with_override(params, "unlearn.score", "prob")
    params = with_override(params, "unlearn.learning_rate", 0)
    assert parameter_problems(params) == ["parameter unlearn.learning_rate: expected a finite number > 0, got 0"]


def test_a_trajectory_that_compares_with_the_retain_reference_needs_the_benchmark(base_params):
    """The unlearn pipeline runs without any retain model's evaluation, so forget_quality and privleak cannot be
    traced there; the benchmark's unlearning reads the reference, and so may."""
    from flat_pipeline.pipelines.benchmark import create_pipeline as benchmark
    from flat_pipeline.pipelines.unlearn import create_pipeline as unlearn

    traced = {"every": "epoch", "metrics": ["forget_truth_ratio", "forget_quality", "privleak"]}
    params = with_override(base_params, "unlearn.trajectory", traced)
    assert parameter_problems(params) == []
    assert trajectory_problems(params, unlearn()) == [
        "parameter unlearn.trajectory.metrics: ['forget_quality', 'privleak'] compare with the retain model's numbers "
        "(retain_reference), which only the benchmark's unlearning reads (`kedro run --pipelines benchmark`); in the "
        "unlearn pipeline trace what they are computed from (forget_truth_ratio, mia_min_k) or drop them"
    ]
    assert trajectory_problems(params, benchmark()) == []
    assert trajectory_problems(with_override(params, "unlearn.trajectory.every", None), unlearn()) == []


def test_evaluate_external_on_a_folder_that_does_not_exist_is_refused_before_the_run(base_params, tmp_path):
    problems = parameter_problems(with_override(base_params, "external_model", str(tmp_path / "no_such_model")))
    assert (
        f"parameter external_model: the folder '{tmp_path / 'no_such_model'}' does not exist; expected a model folder "
        "written by save_pretrained (config.json, weights, tokenizer files) or a hub id such as 'organisation/name'"
    ) in problems
    assert not parameter_problems(with_override(base_params, "external_model", "open-unlearning/tofu_Llama-2-7b"))
