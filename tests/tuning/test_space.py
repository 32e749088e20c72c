"""Search spaces: what a trial draws, and the ranges refused before any trial runs."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from kedro.config import OmegaConfigLoader

from flat_pipeline.config import ParameterError
from flat_pipeline.parameters import parameter_problems
from flat_pipeline.tuning import TuneConfig
from flat_pipeline.tuning.space import corner_settings

PROJECT = Path(__file__).resolve().parents[2]
SPACE = {
    "shared": {"learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}, "num_train_epochs": {"low": 1, "high": 8}},
    "methods": {"flat_kl": {"score": {"choices": ["logprob", "prob"]}}, "npo": {"beta": {"low": 0.05, "high": 1.0}}},
}


def tune(space=SPACE):
    return TuneConfig.from_params({"storage": "unused.journal", "space": space})


def test_every_method_draws_the_shared_ranges_and_its_own():
    config = tune()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for method, own in (("flat_kl", "score"), ("npo", "beta"), ("ga", None)):
        dimensions = config.dimensions(method)
        assert list(dimensions) == ["learning_rate", "num_train_epochs", *([own] if own else [])]
        trial = study.ask()
        drawn = {name: dim.suggest(trial) for name, dim in dimensions.items()}
        assert 1e-4 <= drawn["learning_rate"] <= 3e-3 and isinstance(drawn["num_train_epochs"], int)
        assert trial.distributions["learning_rate"].log
    assert corner_settings(config.dimensions("flat_kl")) == [
        {"learning_rate": 1e-4, "num_train_epochs": 1, "score": "logprob"},
        {"learning_rate": 3e-3, "num_train_epochs": 8, "score": "prob"},
    ]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"shared": {"learning_rat": {"low": 1e-4, "high": 1e-3}}},
         "parameter tune.space.shared.learning_rat: not a setting a trial can draw (unknown) (did you mean "
         "'learning_rate'?)"),
        ({"methods": {"npo": {"seed": {"low": 0, "high": 3}}}}, "parameter tune.space.methods.npo.seed: not a setting"),
        ({"shared": {"learning_rate": {"low": 0, "high": 1e-3, "log": True}}},
         "parameter tune.space.shared.learning_rate.low: expected a finite number > 0, got 0"),
        ({"shared": {"num_train_epochs": {"low": 5, "high": 2}}},
         "parameter tune.space.shared.num_train_epochs.high: expected a finite number >= 5, got 2"),
        ({"shared": {"score": {"choices": []}}},
         "parameter tune.space.shared.score.choices: expected a non-empty list"),
        ({"shared": {"beta": {"low": 0.1, "hihg": 1.0}}}, "parameter tune.space.shared.beta: unknown key 'hihg'"),
        ({"sharde": {}}, "parameter tune.space.sharde: unknown key (did you mean 'shared'?)"),
    ],
)  # fmt: skip
def test_a_bad_space_is_named(space, message):
    with pytest.raises(ParameterError, match="^" + re.escape(message)):
        tune(space).dimensions("npo")


@pytest.fixture
def base_params():
    return OmegaConfigLoader(str(PROJECT / "conf"), base_env="base", default_run_env="base")["parameters"]


def test_a_range_a_method_refuses_stops_the_run_before_any_trial(base_params):
    """Each end of each range is checked against the method's own config: a learning rate of 0 fails here, in the
    parameter check, not at the first trial that happens to draw it."""
    assert parameter_problems(base_params) == []
    base_params["tune"]["space"]["methods"]["rmu"]["steering_coeff"] = {"low": -1.0, "high": 2.0}
    base_params["tune"]["space"]["methods"]["flat_kl"]["score"] = {"choices": ["logprob", "probability"]}
    base_params["tune"]["space"]["methods"]["nop"] = {}
    problems = parameter_problems(base_params)
    assert len(problems) == 1 and problems[0].startswith("parameter tune.space.methods.nop: not a method")
    del base_params["tune"]["space"]["methods"]["nop"]
    problems = parameter_problems(base_params)
    assert len(problems) == 1 and "parameter tune.space.methods.flat_kl.score: expected one of" in problems[0]
