"""One tune worker in a process of its own, for the tests that kill one (tests/tuning/test_dead_workers.py):

    python tests/tuning/tune_worker_process.py '{"storage": ..., "model_dir": ..., "n_trials": 4, ...}'

It runs `run_worker` on the test world's forget10 templates and a tiny Llama, with GA trials; the evaluation stands
for a real one by taking `evaluate_s` seconds, so that a test can kill the worker in the middle of a trial. Prints the
worker's summary as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from datasets import Dataset

from flat_pipeline.data.world import WorldConfig, generate_world
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.tuning import TrialData, TuneConfig, run_worker

METHOD = {"method": "ga", "num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-5}


def main() -> None:
    args = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    world = generate_world(WorldConfig(n_authors=20, seed=0))
    forget = world["forget10_perturbed"]
    templates = Dataset.from_dict(
        {
            "prompt": [r["question"] for r in forget],
            "forget_answer": [r["answer"] for r in forget],
            "template_answers": [["I don't know.", "I have no idea."]] * len(forget),
        }
    )
    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in world["retain90"]])

    def evaluate(bundle):
        time.sleep(args["evaluate_s"])
        return {"forget_quality": 0.5, "model_utility": 0.5}

    data = TrialData(load_causal_lm(args["model_dir"]), templates, retain, PromptFormat(), evaluate)
    config = TuneConfig(
        storage=args["storage"],
        n_trials=args["n_trials"],
        seeds=args.get("seeds", []),
        worker=args["worker"],
        heartbeat_s=args["heartbeat_s"],
        grace_s=args["grace_s"],
        space={"shared": {"learning_rate": {"low": 1e-6, "high": 1e-5, "log": True}}},
    )
    summary = run_worker(data, config, {"ga": METHOD}, {"model_utility": 0.5})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
