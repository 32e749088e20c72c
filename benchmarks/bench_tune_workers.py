"""Tune workers on one machine (issue 26, item 6): the test environment's tune (conf/test: 2 methods x 3 search trials
+ 2 seed re-runs) with 1 worker of 2 torch threads against 2 workers of 1 thread each, on SQLite and on PostgreSQL; then
how long a worker killed with SIGKILL in the middle of a trial costs: from the kill to its trial's re-run by the other
worker, with the default heartbeat (60 s) and grace period (180 s).

    .venv/bin/python benchmarks/bench_tune_workers.py [--n-trials 3] [--no-kill]

Runs `kedro run --env test` first if the test environment has no original model. PostgreSQL is the `pgserver` wheel's
(`make install` puts it in .venv), in a temporary folder; MLflow logs to a temporary store. Run it on a quiet machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from flat_pipeline.tuning import TuneConfig, open_storage, study_name, trial_records

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = Path(sys.executable).parent / "kedro"
METHODS = ["flat_kl", "npo"]  # conf/test/parameters_tune.yml
N_TRIALS = 3


def kedro_worker(storage: str, name: str, worker: int, threads: int, env: dict[str, str]) -> subprocess.Popen:
    settings = {"tune.storage": storage, "tune.study_name": name, "tune.worker": worker, "tune.num_threads": threads,
                "tune.n_trials": N_TRIALS}  # fmt: skip
    params = ",".join(f"{key}={value}" for key, value in settings.items())
    return subprocess.Popen(
        [KEDRO, "run", "--env", "test", "--pipelines", "tune_worker", "--params", params],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        _, errors = worker.communicate()
        if worker.returncode not in (0, -signal.SIGKILL):
            raise RuntimeError(f"a worker failed:\n{errors[-3000:]}")


def timed_tune(storage: str, name: str, n_workers: int, env: dict[str, str]) -> float:
    start = time.perf_counter()
    finish([kedro_worker(storage, name, w, 2 // n_workers, env) for w in range(n_workers)])
    return time.perf_counter() - start


def dead_worker_delay(storage: str, name: str, env: dict[str, str]) -> dict[str, float]:
    """Start two workers, SIGKILL the first 2 s into its first trial; the seconds from the kill to the re-run's start,
    and the survivor's wall time."""
    config = TuneConfig(storage=storage, study_name=name, n_trials=N_TRIALS, seeds=[1, 2])
    start = time.perf_counter()
    doomed, survivor = (kedro_worker(storage, name, w, 1, env) for w in (0, 1))
    first = study_name(config, METHODS[0], "search")
    while True:
        records = trial_records(open_storage(storage), first, N_TRIALS)
        running = [r for r in records if r["state"] == "RUNNING" and str(r["worker"]).endswith(f":{doomed.pid}")]
        if running:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.time()
    finish([doomed, survivor])
    wall = time.perf_counter() - start
    rerun = None
    for method in METHODS:
        for phase in ("search", "seed"):
            study = optuna.load_study(study_name=study_name(config, method, phase), storage=open_storage(storage))
            for trial in study.get_trials():
                if trial.system_attrs.get("failed_trial") is not None:
                    rerun = trial
    if rerun is None:
        raise RuntimeError("no trial was run again")
    return {"delay": rerun.datetime_start.timestamp() - killed_at, "wall": wall}


def main() -> None:
    import argparse

    import pgserver

    global N_TRIALS  # noqa: PLW0603  the workers' tune.n_trials and the kill test's budget
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=N_TRIALS, help="search trials per method (conf/test: 3)")
    parser.add_argument("--no-kill", action="store_true", help="skip the dead worker's measurement (3 to 4 minutes)")
    args = parser.parse_args()
    N_TRIALS = args.n_trials

    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if not any((PROJECT / "data/test/06_models/original_model").glob("*")):
        subprocess.run([KEDRO, "run", "--env", "test"], cwd=PROJECT, env=env, check=True, capture_output=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as scratch:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        pg_folder = Path(scratch) / "pg"
        server = pgserver.get_server(pg_folder, cleanup_mode="stop")
        try:
            storages = {"SQLite": f"sqlite:///{scratch}/optuna.db"}
            server.psql("CREATE DATABASE tune;")
            storages["PostgreSQL"] = f"postgresql://postgres@/tune?host={pg_folder}"
            rows = []
            for kind, storage in storages.items():
                seconds = {n: timed_tune(storage, f"bench_{kind}_{n}_{stamp}", n, env) for n in (1, 2)}
                rows.append((kind, seconds[1], seconds[2]))
            dead = None if args.no_kill else dead_worker_delay(storages["SQLite"], f"bench_dead_{stamp}", env)
        finally:
            server.cleanup()
    print(f"test environment's tune: {len(METHODS)} methods x {N_TRIALS} search trials + 2 seed re-runs each; 1 worker "
          "of 2 torch threads against 2 workers of 1 thread; each a `kedro run` (start-up included)\n")  # fmt: skip
    print("| storage | 1 worker | 2 workers | speed-up |\n|---|---|---|---|")
    for kind, one, two in rows:
        print(f"| {kind} | {one:.1f} s | {two:.1f} s | {one / two:.2f}x |")
    if dead is None:
        return
    print(f"\nworker killed (SIGKILL) 2 s into its first trial, heartbeat 60 s, grace 180 s (the defaults), SQLite: "
          f"its trial started again on the other worker {dead['delay']:.0f} s after the kill; the survivor's wall time "
          f"{dead['wall']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
