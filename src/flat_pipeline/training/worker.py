"""One process of a launched training: `accelerate launch ... -m flat_pipeline.training.worker <job> <work folder>`.

`flat_pipeline.launch` writes the inputs to the work folder and starts the processes; each runs the same `finetune` /
`unlearn` as a single process would (with `launch` unset, so it trains here), and rank 0 writes the trained model and
the history back. An error is recorded for the launching process before it ends this one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from flat_pipeline.launch import record_worker_error


def run_job(job: str, work: Path) -> None:
    import torch
    from datasets import load_from_disk

    from flat_pipeline.models.loading import load_causal_lm
    from flat_pipeline.prompts import PromptFormat

    spec = json.loads((work / "config.json").read_text())
    bundle = load_causal_lm(str(work / "model"), **spec.get("load", {}))  # the dtype / attention of the run's model
    bundle.source = spec.get("source")  # the start model's identity for the checkpoint fingerprint, not the copy
    out = str(work / "out")
    if job == "finetune":
        from flat_pipeline.models.lora import LoraSettings
        from flat_pipeline.training.finetune import FinetuneConfig, finetune

        config, lora = FinetuneConfig(**spec["config"]), LoraSettings(**spec["lora"])
        rows = load_from_disk(str(work / "train"))
        bundle, history = finetune(
            bundle, rows, config, PromptFormat(**spec["prompt"]), save_to=out, lora=lora, track_as=spec["track_as"]
        )
    else:
        from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

        config = UnlearnConfig(**{**spec["config"], "launch": None})
        retain = load_from_disk(str(work / "retain")) if (work / "retain").exists() else None
        forget = load_from_disk(str(work / "forget"))
        bundle, history = unlearn(
            bundle, forget, config, PromptFormat(**spec["prompt"]), retain_rows=retain, save_to=out,
            track_as=spec["track_as"],
        )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        (work / "history.json").write_text(json.dumps(history))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def main(job: str, work: Path) -> None:
    try:
        run_job(job, work)
    except Exception as error:
        record_worker_error(work, int(os.environ.get("RANK", "0")), error)
        raise


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
