"""General utility through lm-evaluation-harness, as FLAT's Harry Potter evaluation (flat.md §3.4): Wikitext
perplexity and zero-shot accuracy on boolq, rte, hellaswag, winogrande, arc, openbookqa, piqa and TruthfulQA.

lm-evaluation-harness is an optional extra (`pip install -e '.[lm-eval]'`) and its tasks read their data from the
hub. Each task that cannot run (the package missing, its data not reachable offline) is reported as not run, with
the reason, and the others still run. Tasks can read local copies of their data through task YAMLs in
`include_path` (lm-eval's own mechanism for custom tasks).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flat_pipeline.config import config_from_params
from flat_pipeline.models.loading import ModelBundle

logger = logging.getLogger(__name__)

NOT_INSTALLED = "lm-evaluation-harness is not installed (pip install -e '.[lm-eval]')"
# FLAT's "Avg Acc" averages every task's `acc` except the generative TruthfulQA task's (flat.md §3.4).
AVERAGE_EXCLUDES = ("truthfulqa_gen",)


@dataclass
class LmEvalConfig:
    """`evaluate.lm_eval` parameters: which lm-eval tasks to run and how."""

    tasks: list[str] = field(default_factory=list)  # empty: no utility evaluation
    batch_size: int = 8
    num_fewshot: int = 0
    limit: int | None = None  # documents per task (None: all)
    include_path: str | None = None  # a folder of extra task YAMLs, e.g. the tasks over local copies of their data

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> LmEvalConfig:
        return config_from_params(cls, params or {}, "evaluate.lm_eval")


@dataclass
class UtilityResult:
    """Numbers by `<task>/<metric>` (lm-eval's filter suffix `,none` dropped), and the reason of each task not run."""

    metrics: dict[str, float] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)


def _metric_name(task: str, key: str) -> str:
    # lm-eval keys read "acc,none" (metric, filter); MLflow allows no commas in metric names.
    metric, _, filter_name = key.partition(",")
    return f"lm_eval/{task}/{metric}" + ("" if filter_name in ("", "none") else f"_{filter_name}")


def _numbers(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    numbers = {}
    for task, values in results.items():
        for key, value in values.items():
            if "stderr" in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if key != "sample_len" and math.isfinite(value):
                numbers[_metric_name(task, key)] = float(value)
    return numbers


def average_accuracy(metrics: Mapping[str, float]) -> float | None:
    """Mean of every task's `acc` but the excluded ones; None when no task reported one."""
    accuracies = [
        value for name, value in metrics.items() if name.endswith("/acc") and name.split("/")[1] not in AVERAGE_EXCLUDES
    ]
    return sum(accuracies) / len(accuracies) if accuracies else None


@functools.lru_cache(maxsize=8)
def _task_manager(manager_class: type, include_path: str | None) -> Any:
    """One task index per process and include_path: building it reads lm-eval's thousands of task YAMLs (about 14 s on
    2 cores), which the retain, original and unlearned evaluations of one run would otherwise each pay."""
    return manager_class(include_path=include_path)


def lm_eval_utility(bundle: ModelBundle, config: LmEvalConfig) -> UtilityResult:
    """Run each configured lm-eval task on the loaded model; a task that cannot run is reported, not raised."""
    result = UtilityResult()
    if not config.tasks:
        return result
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        result.not_run = dict.fromkeys(config.tasks, NOT_INSTALLED)
        logger.warning("utility tasks %s not run: %s", config.tasks, NOT_INSTALLED)
        return result
    try:
        model = HFLM(pretrained=bundle.model, tokenizer=bundle.tokenizer, batch_size=config.batch_size)
        manager = _task_manager(TaskManager, config.include_path)
    except Exception as error:  # e.g. an include_path that is not a folder of task YAMLs
        result.not_run = dict.fromkeys(config.tasks, f"{type(error).__name__}: {error}"[:300])
        logger.warning("utility tasks %s not run: %s", config.tasks, error)
        return result
    for task in config.tasks:
        try:
            output = lm_eval.simple_evaluate(
                model=model, tasks=[task], num_fewshot=config.num_fewshot, limit=config.limit, task_manager=manager
            )
        except Exception as error:  # no data offline, an unknown task name: one task's problem, not the run's
            result.not_run[task] = f"{type(error).__name__}: {error}"[:300]
            logger.warning("utility task %s not run: %s", task, result.not_run[task])
            continue
        result.metrics.update(_numbers(output["results"]))
    average = average_accuracy(result.metrics)
    if average is not None:
        result.metrics["utility_avg_acc"] = average
    return result
