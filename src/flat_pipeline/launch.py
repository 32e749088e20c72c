"""Multi-process training through `accelerate launch`: DDP, FSDP or DeepSpeed, as an accelerate config file says.

A node that asks for more than one process writes its inputs to a work folder (the model and tokenizer as
`save_pretrained`, the rows as `save_to_disk`, the config as JSON), hands training to

    accelerate launch [--config_file conf/accelerate/<strategy>.yaml | --multi_gpu] --num_processes N
        --main_process_port P -m flat_pipeline.training.worker <job> <work folder>

and reads the trained model and its history back. Each process runs the same `finetune` / `unlearn` as a single
process would; the HF Trainer shards the batches and synchronises the gradients, and rank 0 writes the result. A
process that fails writes its error to the work folder, and the launching process raises it again (same type and
message), so a guard's message reaches the user. This module imports nothing of flat_pipeline.training (which
imports it). On a machine without GPUs the processes use gloo on the CPU (`--multi_gpu` plus `use_cpu`:
accelerate's `--cpu` starts only one process).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass
from pathlib import Path
from typing import Any

from flat_pipeline.config import ParameterError, check_number, config_from_params

logger = logging.getLogger(__name__)

JOBS = ("finetune", "unlearn")


@dataclass
class LaunchSettings:
    """A `launch:` parameter block (of `finetune` or `unlearn`); `block` names it in messages."""

    num_processes: int = 1  # more than one: hand training to `accelerate launch`
    config_file: str | None = None  # accelerate config (conf/accelerate/*.yaml); None: plain DDP (--multi_gpu)
    main_process_port: int = 29517
    block: InitVar[str] = "launch"

    def __post_init__(self, block: str) -> None:
        check_number(f"{block}.num_processes", self.num_processes, minimum=1, integer=True)
        check_number(f"{block}.main_process_port", self.main_process_port, minimum=1, maximum=65535, integer=True)
        if self.config_file is not None and not Path(self.config_file).is_file():
            raise ParameterError(
                f"parameter {block}.config_file: expected an accelerate config file, got {self.config_file!r} "
                f"(no such file from {Path.cwd()})"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, block: str) -> LaunchSettings:
        """From the `launch` block inside `block` (e.g. `finetune`); unknown keys name the nearest known one."""
        return config_from_params(cls, params or {}, f"{block}.launch")


def command(job: str, work: Path, settings: LaunchSettings) -> list[str]:
    """The `accelerate launch` command line that runs `job` on the inputs in `work`."""
    strategy = ["--config_file", settings.config_file] if settings.config_file else ["--multi_gpu"]
    return [
        sys.executable, "-m", "accelerate.commands.launch", *strategy,
        "--num_processes", str(settings.num_processes), "--main_process_port", str(settings.main_process_port),
        "-m", "flat_pipeline.training.worker", job, str(work),
    ]  # fmt: skip


def run(job: str, bundle: Any, rows: Mapping[str, Any], config: Any, settings: LaunchSettings, **extra: Any) -> tuple:
    """Train `bundle` with `job` in `settings.num_processes` processes; returns the trained bundle and its history.

    `rows` maps names to datasets (finetune: `train`; unlearn: `forget` and, for methods that use it, `retain`);
    `extra` holds the job's other keyword arguments (the prompt format's parameters). An error in a process is
    raised here again.
    """
    from flat_pipeline.models.loading import load_causal_lm, load_settings_of
    from flat_pipeline.models.portable import make_portable

    if job not in JOBS:
        raise ValueError(f"unknown launch job '{job}'; expected one of {JOBS}")
    with tempfile.TemporaryDirectory(prefix=f"flat_pipeline_{job}_") as scratch:
        work = Path(scratch)
        bundle.model.save_pretrained(work / "model")
        bundle.tokenizer.save_pretrained(work / "model")
        make_portable(work / "model")
        for name, dataset in rows.items():
            if dataset is not None:
                dataset.save_to_disk(str(work / name))
        # The workers start from the saved copy: loaded as the run loaded `bundle` (model.dtype, attention), not in
        # from_pretrained's defaults.
        load = load_settings_of(bundle.model)
        spec = {"config": asdict(config), "source": bundle.source, "load": load, **extra}
        (work / "config.json").write_text(json.dumps(spec))
        cmd = command(job, work, settings)
        logger.info("handing %s to %d processes: %s", job, settings.num_processes, " ".join(cmd))
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **_tracking_env()}
        result = subprocess.run(cmd, env=env, check=False)
        if result.returncode != 0:
            raise_worker_error(job, work, result.returncode, cmd)
        trained = load_causal_lm(str(work / "out"), load["dtype"], load["attn_implementation"])
        history = json.loads((work / "history.json").read_text())
    trained.source = bundle.source
    return trained, history


def _tracking_env() -> dict[str, str]:
    """The MLflow run (and its store) that the workers stream their training curves into (training/tracking.py)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return {}
    return {"MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}


def record_worker_error(work: Path, rank: int, error: BaseException) -> None:
    """Called by a failing worker: its error's type and message, for `raise_worker_error`."""
    kind = type(error)
    record = {"type": f"{kind.__module__}:{kind.__qualname__}", "message": str(error), "rank": rank}
    (work / f"error-{rank}.json").write_text(json.dumps(record))


def raise_worker_error(job: str, work: Path, returncode: int, cmd: list[str]) -> None:
    """Raise the first error a worker recorded, as its own type where that can be rebuilt from a message (builtins
    and flat_pipeline's), else as RuntimeError; without a record, a RuntimeError with the exit status."""
    records = sorted(work.glob("error-*.json"), key=lambda path: path.stat().st_mtime)
    if not records:
        raise RuntimeError(f"accelerate launch of {job} failed with exit status {returncode}: {' '.join(cmd)}")
    record = json.loads(records[0].read_text())
    message = f"{record['message']} [in launched process {record['rank']} of {job}]"
    try:
        error = _error_class(record["type"])(message)
    except TypeError:  # a type that is not built from a message alone
        error = RuntimeError(message)
    raise error


def _error_class(name: str) -> type[Exception]:
    module, _, qualname = name.partition(":")
    if module == "builtins" or module.startswith("flat_pipeline."):
        try:
            found = getattr(importlib.import_module(module), qualname)
        except (ImportError, AttributeError):
            found = None
        if isinstance(found, type) and issubclass(found, Exception):
            return found
    return RuntimeError
