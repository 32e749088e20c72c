"""Multi-process training through `accelerate launch`: DDP, FSDP or DeepSpeed, as an accelerate config file says.

A node that asks for more than one process writes its inputs to a work folder (the model and tokenizer as
`save_pretrained`, the rows as `save_to_disk`, the config as JSON), hands training to

    accelerate launch [--config_file conf/accelerate/<strategy>.yaml | --multi_gpu] --num_processes N
        --main_process_port P -m flat_pipeline.launch <job> <work folder>

and reads the trained model and its history back. Each process runs the same `finetune` / `unlearn` as a single
process would; the HF Trainer shards the batches and synchronises the gradients, and rank 0 writes the result.
On a machine without GPUs the processes use gloo on the CPU (`--multi_gpu` plus `use_cpu`: accelerate's `--cpu`
starts only one process).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flat_pipeline.config import config_from_params

logger = logging.getLogger(__name__)

JOBS = ("finetune", "unlearn")


@dataclass
class LaunchSettings:
    """A `launch:` parameter block (of `finetune` or `unlearn`)."""

    num_processes: int = 1  # more than one: hand training to `accelerate launch`
    config_file: str | None = None  # accelerate config (conf/accelerate/*.yaml); None: plain DDP (--multi_gpu)
    main_process_port: int = 29517

    def __post_init__(self) -> None:
        if self.num_processes < 1:
            raise ValueError(f"parameter launch.num_processes: expected at least 1, got {self.num_processes}")
        if self.config_file is not None and not Path(self.config_file).is_file():
            raise ValueError(f"parameter launch.config_file: no accelerate config at '{self.config_file}'")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, block: str) -> LaunchSettings:
        return config_from_params(cls, params or {}, f"{block}.launch")


def command(job: str, work: Path, settings: LaunchSettings) -> list[str]:
    """The `accelerate launch` command line that runs `job` on the inputs in `work`."""
    strategy = ["--config_file", settings.config_file] if settings.config_file else ["--multi_gpu"]
    return [
        sys.executable, "-m", "accelerate.commands.launch", *strategy,
        "--num_processes", str(settings.num_processes), "--main_process_port", str(settings.main_process_port),
        "-m", "flat_pipeline.launch", job, str(work),
    ]  # fmt: skip


def run(job: str, bundle: Any, rows: Mapping[str, Any], config: Any, settings: LaunchSettings, **extra: Any) -> tuple:
    """Train `bundle` with `job` in `settings.num_processes` processes; returns the trained bundle and its history.

    `rows` maps names to datasets (finetune: `train`; unlearn: `forget` and, for methods that use it, `retain`);
    `extra` holds the job's other keyword arguments (prompt_format).
    """
    from flat_pipeline.models.loading import load_causal_lm

    if job not in JOBS:
        raise ValueError(f"unknown launch job '{job}'; expected one of {JOBS}")
    with tempfile.TemporaryDirectory(prefix=f"flat_pipeline_{job}_") as scratch:
        work = Path(scratch)
        bundle.model.save_pretrained(work / "model")
        bundle.tokenizer.save_pretrained(work / "model")
        for name, dataset in rows.items():
            if dataset is not None:
                dataset.save_to_disk(str(work / name))
        (work / "config.json").write_text(json.dumps({"config": asdict(config), **extra}))
        cmd = command(job, work, settings)
        logger.info("handing %s to %d processes: %s", job, settings.num_processes, " ".join(cmd))
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        result = subprocess.run(cmd, env=env, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"accelerate launch of {job} failed with exit status {result.returncode}: {cmd}")
        trained = load_causal_lm(str(work / "out"))
        history = json.loads((work / "history.json").read_text())
    trained.source = bundle.source
    return trained, history


def _worker(job: str, work: Path) -> None:
    """One process of a launched job (run by `accelerate launch -m flat_pipeline.launch <job> <work>`)."""
    import torch
    from datasets import load_from_disk

    from flat_pipeline.models.loading import load_causal_lm

    spec = json.loads((work / "config.json").read_text())
    bundle = load_causal_lm(str(work / "model"))
    bundle.source = None
    out, main_process = str(work / "out"), int(os.environ.get("RANK", "0")) == 0
    if job == "finetune":
        from flat_pipeline.models.lora import LoraSettings
        from flat_pipeline.training.finetune import FinetuneConfig, finetune, finetune_with_lora

        config, lora = FinetuneConfig(**spec["config"]), LoraSettings(**spec["lora"])
        rows = load_from_disk(str(work / "train"))
        if lora.enabled:  # merged after training, saved by the main process (DDP; not FSDP / DeepSpeed)
            bundle, history = finetune_with_lora(bundle, rows, config, spec["prompt_format"], lora)
            if main_process:
                bundle.model.save_pretrained(out)
                bundle.tokenizer.save_pretrained(out)
        else:
            bundle, history = finetune(bundle, rows, config, spec["prompt_format"], save_to=out)
    else:
        from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

        config = UnlearnConfig(**{**spec["config"], "launch": None})
        retain = load_from_disk(str(work / "retain")) if (work / "retain").exists() else None
        forget = load_from_disk(str(work / "forget"))
        bundle, history = unlearn(bundle, forget, config, spec["prompt_format"], retain_rows=retain, save_to=out)
        if config.lora_settings.enabled and main_process:
            bundle.model.save_pretrained(out)
            bundle.tokenizer.save_pretrained(out)
    if main_process:
        (work / "history.json").write_text(json.dumps(history))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
