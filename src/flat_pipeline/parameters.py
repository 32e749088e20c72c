"""The schema of every parameter block, checked all at once before a run starts (flat_pipeline.hooks.PreflightHook).

An unknown block or key is refused with the nearest known name (`unlaern` -> `unlearn`), and every setting is
range-checked under its full name (`parameter unlearn.learning_rate: expected a finite number > 0, got 0`), so that a
typo or a bad value stops `kedro run` in seconds instead of after the finetunes. Blocks read into config dataclasses
(FinetuneConfig, UnlearnConfig, EvaluateConfig, ...) are checked by building them; the keys of the other blocks are
listed here. Every environment's parameters pass this check (tests/test_parameters.py).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flat_pipeline.config import ParameterError, check_choice, check_number, config_from_params, nearest, unknown_keys

Block = Mapping[str, Any]


class Problems(list[str]):
    """The messages of every problem found, so that one run reports them all."""

    @contextmanager
    def catch(self) -> Iterator[None]:
        """Record the ValueError (ParameterError, DataValidationError, ...) raised inside instead of raising it."""
        try:
            yield
        except ValueError as error:
            self.append(str(error))

    def keys(self, block: Any, known: Any, name: str) -> bool:
        """Record unknown keys of `block`; False when it is not a mapping at all (then nothing else is checked)."""
        if not isinstance(block, Mapping):
            self.append(f"parameter {name}: expected a mapping of settings, got {block!r}")
            return False
        self.extend(unknown_keys(block, known, name))
        return True


def every_problem(build: Callable[[Mapping[str, Any]], Any], block: Any, name: str) -> list[str]:
    """Every problem of a block that a config class checks, whose constructor stops at the first one: build it, and
    while it fails, record the problem and build it again without the setting the message names (`<name>.<key>`), so
    a rule across settings (code_compat with score) is judged on the settings as given."""
    if not isinstance(block, Mapping):
        return [f"parameter {name}: expected a mapping of settings, got {block!r}"]
    found: list[str] = []
    remaining = dict(block)
    for _ in range(len(block) + 1):
        try:
            build(remaining)
            return found
        except ValueError as error:
            found.append(str(error))
            named = re.match(rf"parameter {re.escape(name)}\.(\w+)", str(error))
            if not named or named.group(1) not in remaining:
                return found  # a problem of no one setting of the block: the others cannot be told apart from it
            del remaining[named.group(1)]
    return found


def _keyword_names(function: Callable[..., Any], *excluded: str) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name not in excluded]


def _check_model(block: Block, params: Block, problems: Problems) -> None:
    from flat_pipeline.models.llama import build_llama
    from flat_pipeline.models.loading import check_model_params
    from flat_pipeline.models.tokenizer import train_bpe_tokenizer
    from flat_pipeline.prompts import PromptFormat

    known = ("source", "name_or_path", "prompt", "dtype", "attn_implementation", "gradient_checkpointing")
    # prompt_format is let through here: PromptFormat names the block that replaced it
    if not problems.keys(block, (*known, "prompt_format", "tokenizer", "tiny_llama", "gguf"), "model"):
        return
    with problems.catch():
        PromptFormat.from_params(block)
    with problems.catch():
        check_model_params(block)
    tokenizer, llama = block.get("tokenizer") or {}, block.get("tiny_llama") or {}
    if problems.keys(tokenizer, _keyword_names(train_bpe_tokenizer, "texts"), "model.tokenizer"):
        for name, minimum in (("vocab_size", 16), ("min_frequency", 1)):
            with problems.catch():
                check_number(f"model.tokenizer.{name}", tokenizer.get(name, minimum), minimum=minimum, integer=True)
    if problems.keys(llama, _keyword_names(build_llama, "tokenizer", "attn_implementation"), "model.tiny_llama"):
        for name, value in llama.items():
            with problems.catch():
                minimum = 0 if name == "seed" else 1
                check_number(f"model.tiny_llama.{name}", value, minimum=minimum, integer=True, optional=value is None)
        hidden, heads = llama.get("hidden_size"), llama.get("num_attention_heads")
        if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
            problems.append(
                f"parameter model.tiny_llama.hidden_size: expected a multiple of num_attention_heads ({heads}), "
                f"got {hidden}"
            )


def _check_data_prep(block: Block, params: Block, problems: Problems) -> None:
    from flat_pipeline.data.sources import SOURCES
    from flat_pipeline.data.world import WorldConfig

    known = ("source", "path", "forget_split", "retain_split", "holdout_split", "text_chunks", "synthetic")
    if not problems.keys(block, known, "data_prep"):
        return
    with problems.catch():
        check_choice("data_prep.source", block.get("source"), SOURCES)
    if not isinstance(block.get("forget_split"), str):
        problems.append(f"parameter data_prep.forget_split: expected a split name, got {block.get('forget_split')!r}")
    if block.get("source") != "synthetic" and not block.get("path"):
        problems.append(
            f"parameter data_prep.path: source '{block.get('source')}' needs the folder or file of its data, got "
            f"{block.get('path')!r}"
        )
    with problems.catch():
        config_from_params(WorldConfig, block.get("synthetic") or {}, "data_prep.synthetic")
    chunks = block.get("text_chunks")
    if chunks is not None and problems.keys(chunks, ("chunk_words", "prompt_words"), "data_prep.text_chunks"):
        for name in ("chunk_words", "prompt_words"):
            with problems.catch():
                check_number(f"data_prep.text_chunks.{name}", chunks.get(name), minimum=1, integer=True)
        if isinstance(chunks.get("chunk_words"), int) and chunks.get("prompt_words", 0) >= chunks["chunk_words"]:
            problems.append(
                f"parameter data_prep.text_chunks.prompt_words: expected fewer than chunk_words "
                f"({chunks['chunk_words']}), got {chunks['prompt_words']}"
            )


def _check_templates(block: Block, params: Block, problems: Problems) -> None:
    from flat_pipeline.templates import check_template_options

    generated = (
        "model", "instruction", "shots", "reject_stating_answer", "max_new_tokens", "temperature", "top_p", "batch_size"
    )  # fmt: skip
    if not problems.keys(block, ("source", "candidates_per_item", "pairing", "seed", "file", "generated"), "templates"):
        return
    with problems.catch():
        check_template_options(dict(block), check_file=False)  # the preflight checks it where templates are made
    with problems.catch():
        check_number("templates.seed", block.get("seed", 0), integer=True)
    options = block.get("generated") or {}
    if problems.keys(options, generated, "templates.generated"):
        for name, bounds in (
            ("max_new_tokens", {"minimum": 1, "integer": True}),
            ("batch_size", {"minimum": 1, "integer": True}),
            ("temperature", {"above": 0}),
            ("top_p", {"above": 0, "maximum": 1}),
        ):
            if name in options:
                with problems.catch():
                    check_number(f"templates.generated.{name}", options[name], **bounds)
        shots = options.get("shots")
        if shots is not None and not (
            isinstance(shots, list)
            and all(isinstance(s, Mapping) and isinstance(s.get("question"), str) and isinstance(s.get("answer"), str)
                    for s in shots)
        ):  # fmt: skip
            problems.append(
                f"parameter templates.generated.shots: expected null or a list of {{question, answer}} texts, got "
                f"{shots!r}"
            )


def _check_finetune(block: Block, params: Block, problems: Problems) -> None:
    from flat_pipeline.launch import LaunchSettings
    from flat_pipeline.models.lora import LoraSettings
    from flat_pipeline.training.finetune import FinetuneConfig, min_train_exact_match

    known = ("train_splits", "num_threads", "min_train_exact_match", "launch", "lora", "training")
    if not problems.keys(block, known, "finetune"):
        return
    splits = block.get("train_splits")
    if not (isinstance(splits, list) and splits and all(isinstance(s, str) for s in splits)):
        problems.append(f"parameter finetune.train_splits: expected a non-empty list of split names, got {splits!r}")
    with problems.catch():
        check_number("finetune.num_threads", block.get("num_threads"), minimum=1, integer=True, optional=True)
    with problems.catch():
        min_train_exact_match(block)  # the finetune's own range check
    problems.extend(every_problem(FinetuneConfig.from_params, block.get("training") or {}, "finetune.training"))
    with problems.catch():
        LoraSettings.from_params(block.get("lora"), "finetune")
    with problems.catch():
        LaunchSettings.from_params(block.get("launch"), "finetune")


def unlearn_config(unlearn: Block, params: Block, block: str = "unlearn") -> Any:
    """The UnlearnConfig a run builds from `unlearn` (with the template pairing of `templates`)."""
    from flat_pipeline.training.unlearn import UnlearnConfig

    pairing = (params.get("templates") or {}).get("pairing", "resample")
    return UnlearnConfig.from_params({**unlearn, "pairing": pairing}, block)


def _check_unlearn(block: Block, params: Block, problems: Problems) -> None:
    if not isinstance(block, Mapping):
        problems.append(f"parameter unlearn: expected a mapping of settings, got {block!r}")
        return
    # unknown keys and ranges: UnlearnConfig's own checks, every one of them
    problems.extend(every_problem(lambda settings: unlearn_config(settings, params), block, "unlearn"))


def _check_evaluate(block: Block, params: Block, problems: Problems) -> None:
    from flat_pipeline.evaluation import METRICS, SET_ROLES, EvaluateConfig
    from flat_pipeline.utility import LmEvalConfig

    if not problems.keys(block, ("sets", "metrics", "settings", "lm_eval"), "evaluate"):
        return
    sets = block.get("sets") or {}
    if problems.keys(sets, SET_ROLES, "evaluate.sets"):
        for role, split in sets.items():
            if split is not None and not isinstance(split, str):
                problems.append(f"parameter evaluate.sets.{role}: expected a split name or null, got {split!r}")
    metrics = block.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        problems.append(f"parameter evaluate.metrics: expected a non-empty list of metric names, got {metrics!r}")
    else:
        for name in metrics:
            if name not in METRICS:
                problems.append(
                    f"parameter evaluate.metrics: unknown metric {name!r}{nearest(str(name), METRICS)}; "
                    f"known: {', '.join(METRICS)}"
                )
    with problems.catch():
        settings = EvaluateConfig.from_params(block.get("settings") or {})
        _check_evaluate_settings(settings, problems)
    with problems.catch():
        lm_eval = LmEvalConfig.from_params(block.get("lm_eval"))
        for name in ("batch_size", "num_fewshot", "limit"):
            with problems.catch():
                minimum, optional = (0 if name == "num_fewshot" else 1), name == "limit"
                check_number(
                    f"evaluate.lm_eval.{name}", getattr(lm_eval, name), minimum=minimum, integer=True, optional=optional
                )


def _check_evaluate_settings(settings: Any, problems: Problems) -> None:
    counts = {
        "max_new_tokens": False,
        "scoring_batch_size": False,
        "generation_batch_size": False,
        "completion_prompt_words": False,
        "completion_max_new_tokens": False,
        "knowmem_shots": False,
        "knowmem_items": True,
        "knowmem_max_new_tokens": False,
        "max_items": True,
        "max_length": False,
    }  # fmt: skip  (name -> may be null)
    for name, optional in counts.items():
        with problems.catch():
            minimum = 0 if name == "knowmem_shots" else 1
            check_number(f"evaluate.settings.{name}", getattr(settings, name), minimum=minimum, integer=True,
                         optional=optional)  # fmt: skip
    for name in ("mia_k", "template_threshold"):
        with problems.catch():
            check_number(f"evaluate.settings.{name}", getattr(settings, name), above=0, maximum=1)
    if "{prompt}" not in settings.completion_prompt_template:
        problems.append(
            f"parameter evaluate.settings.completion_prompt_template: expected a template holding '{{prompt}}', "
            f"got {settings.completion_prompt_template!r}"
        )


def _check_benchmark(block: Block, params: Block, problems: Problems) -> None:
    from flat_pipeline.pipelines.benchmark.nodes import method_parameters  # the merge the benchmark itself does

    if not problems.keys(block, ("title", "methods", "leaderboard", "trajectory"), "benchmark"):
        return
    methods, unlearn, trajectory = block.get("methods") or {}, params.get("unlearn") or {}, block.get("trajectory")
    # Methods inherit `unlearn`: a problem there is reported once, under unlearn, not again for every method; one of
    # benchmark.trajectory once, under its own name.
    unlearn_ok = not _problems_of(lambda: unlearn_config(unlearn, params))
    trajectory_problems = _problems_of(lambda: _check_benchmark_trajectory(unlearn, trajectory)) if unlearn_ok else []
    problems.extend(trajectory_problems)
    if unlearn_ok and not trajectory_problems and problems.keys(methods, methods, "benchmark.methods"):
        for name, overrides in methods.items():  # names: checked against the pipeline (preflight)
            if not isinstance(overrides, Mapping):
                problems.append(f"parameter benchmark.methods.{name}: expected unlearn settings, got {overrides!r}")
                continue
            with problems.catch():  # each method's config as the benchmark builds it
                unlearn_config(method_parameters(unlearn, dict(overrides), trajectory, name), params,
                               f"benchmark.methods.{name}")  # fmt: skip
    board = block.get("leaderboard") or {}
    if problems.keys(board, ("columns", "sort_by", "descending", "scatter"), "benchmark.leaderboard"):
        scatter = board.get("scatter")
        if scatter is not None and not (isinstance(scatter, list) and len(scatter) == 2):
            problems.append(
                f"parameter benchmark.leaderboard.scatter: expected two metric names [x, y], got {scatter!r}"
            )


def _check_benchmark_trajectory(unlearn: Block, trajectory: Any) -> None:
    """`benchmark.trajectory` over `unlearn.trajectory`, as every method gets it: its keys and ranges."""
    from flat_pipeline.training.trajectory import TrajectoryConfig

    if trajectory is None:
        return
    if not isinstance(trajectory, Mapping):
        raise ParameterError(f"parameter benchmark.trajectory: expected a mapping or null, got {trajectory!r}")
    TrajectoryConfig.from_params({**(unlearn.get("trajectory") or {}), **trajectory}, "benchmark")


def _problems_of(check: Callable[[], Any]) -> Problems:
    problems = Problems()
    with problems.catch():
        check()
    return problems


def _check_import_models(block: Block, params: Block, problems: Problems) -> None:
    if problems.keys(block, ("original", "retain", "tokenizer", "retain_logs"), "import_models"):
        for name, value in block.items():
            if value is not None and not isinstance(value, str):
                problems.append(f"parameter import_models.{name}: expected a folder or hub id, got {value!r}")


def _check_tracking(block: Block, params: Block, problems: Problems) -> None:
    if problems.keys(block, ("log_unlearned_model",), "tracking"):
        value = block.get("log_unlearned_model")
        if not isinstance(value, bool):
            problems.append(f"parameter tracking.log_unlearned_model: expected true or false, got {value!r}")


def _check_external_model(value: Any, params: Block, problems: Problems) -> None:
    from flat_pipeline.models.loading import model_location_problem

    if not isinstance(value, str) or not value:
        problems.append(f"parameter external_model: expected a model folder or hub id, got {value!r}")
    elif problem := model_location_problem(value):
        problems.append(f"parameter external_model: {problem}")


def _check_tune(block: Block, params: Block, problems: Problems) -> None:
    """`tune`: its settings, rule and metrics, and every method's space at each end of each range (the configs the
    trials will build), so that a bad range stops the run before the first trial, not at trial 37."""
    from flat_pipeline.evaluation import METRICS
    from flat_pipeline.pipelines.tune.nodes import tuned_method_parameters  # the settings the worker builds
    from flat_pipeline.tuning.study import TuneConfig, check_methods

    with problems.catch():
        config = TuneConfig.from_params(block)
        benchmark = params.get("benchmark") or {}
        known = list(benchmark.get("methods") or {})
        names = [*(config.metrics or []), *config.selection.metrics]
        bad = [name for name in names if name not in METRICS]
        if bad:
            raise ParameterError(f"parameter tune: unknown metric(s) {bad}{nearest(bad[0], METRICS)}")
        stray = sorted(set((block.get("space") or {}).get("methods") or {}) - set(known))
        if stray:
            raise ParameterError(
                f"parameter tune.space.methods.{stray[0]}: not a method of benchmark.methods{nearest(stray[0], known)}"
            )
        # the methods inherit `unlearn`: a problem there is reported once, under unlearn, not again for each method
        # (their spaces are then checked once unlearn is right)
        unlearn = params.get("unlearn") or {}
        if not _problems_of(lambda: unlearn_config(unlearn, params)):
            pairing = (params.get("templates") or {}).get("pairing")
            check_methods(config, tuned_method_parameters(block, benchmark, unlearn, pairing))


# Every top-level parameter block and its check; a block not listed here is refused.
BLOCK_CHECKS: dict[str, Callable[[Any, Block, Problems], None]] = {
    "model": _check_model,
    "data_prep": _check_data_prep,
    "templates": _check_templates,
    "finetune": _check_finetune,
    "unlearn": _check_unlearn,
    "evaluate": _check_evaluate,
    "benchmark": _check_benchmark,
    "import_models": _check_import_models,
    "external_model": _check_external_model,  # `--params external_model=<folder>` for evaluate_external
    "tracking": _check_tracking,
    "tune": _check_tune,
}


def parameter_problems(params: Block) -> list[str]:
    """Every problem of `params` (all blocks merged, runtime overrides included), one message each."""
    problems = Problems()
    for block in params:
        if block not in BLOCK_CHECKS:
            problems.append(
                f"parameter block '{block}' is unknown{nearest(str(block), BLOCK_CHECKS)}; "
                f"known: {', '.join(BLOCK_CHECKS)}"
            )
    for block, check in BLOCK_CHECKS.items():
        if block in params:
            check(params[block], params, problems)
    return problems


def check_parameters(params: Block, also: Iterable[str] = ()) -> None:
    """Raise ParameterError naming every problem of `params`, and the problems `also` found elsewhere."""
    problems = [*parameter_problems(params), *also]
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ParameterError(f"{len(problems)} parameter problem(s); nothing was run:\n{listed}")
