"""MLflow run status (flat_pipeline.hooks.RunStatusHook, issue 13): a SIGINT-ed or SIGTERM-ed `kedro run` ends its run
KILLED, runs that dead processes of this host left RUNNING are marked FAILED at the next start, and every run carries
its Kedro environment."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from flat_pipeline.hooks.run_status import run_environment
from tests.kedro_runs import run_session

# `kedro run` as .venv/bin/kedro starts it, but its first node waits (for a signal) after touching $NODE_STARTED_FILE:
# the signal then comes while a node runs, as a Ctrl-C or a scheduler's SIGTERM usually does.
KEDRO_RUN_WITH_A_WAITING_NODE = """
import os, sys, time
from pathlib import Path
from kedro.framework.cli import main
from kedro.pipeline import Node

def wait_for_a_signal(self, inputs=None):
    Path(os.environ["NODE_STARTED_FILE"]).touch()
    time.sleep(600)

Node.run = wait_for_a_signal
sys.exit(main())
"""
STARTUP_TIMEOUT_S = 90
INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
EXIT_TIMEOUT_S = 60


def tracking_client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def all_runs(project: Path) -> dict[str, Run]:
    """Every run of the project's tracking store by id, whatever the experiment."""
    client = tracking_client(project)
    experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
    return {run.info.run_id: run for run in client.search_runs(experiment_ids)}


@contextmanager
def as_from_a_terminal() -> Iterator[None]:
    """Inside: the interrupt signals as a shell gives them to a command it starts (not blocked, not ignored). A child
    inherits its parent's signal mask and ignored signals, and a test worker's may have been changed by what ran in
    it before (a library that blocks SIGINT while it starts a helper process)."""
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)
    ignored = [signum for signum in INTERRUPTS if signal.getsignal(signum) == signal.SIG_IGN]
    for signum in ignored:
        signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum in ignored:
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def interrupt_a_running_node(project: Path, signum: int) -> tuple[int, Run]:
    """Start `kedro run`, send it `signum` while its first node runs, and return its exit code and MLflow run."""
    output = project.parent / f"kedro_run_{signal.Signals(signum).name}.txt"
    node_started = project.parent / "node_started"
    with output.open("w") as output_file, as_from_a_terminal():
        process = subprocess.Popen(
            [sys.executable, "-c", KEDRO_RUN_WITH_A_WAITING_NODE, "run", "--env", "test", "--pipelines", "data_prep"],
            cwd=project,
            stdout=output_file,
            stderr=subprocess.STDOUT,
            # PYTHONFAULTHANDLER: a SIGABRT prints every thread's stack, should the process hang.
            env={**os.environ, "NODE_STARTED_FILE": str(node_started), "PYTHONFAULTHANDLER": "1"},
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not node_started.exists():
            assert process.poll() is None, f"kedro run ended before its first node:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"no node started after {STARTUP_TIMEOUT_S} s:\n{output.read_text()}"
            time.sleep(0.2)
        process.send_signal(signum)
        try:
            returncode = process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            process.wait()
            pytest.fail(f"kedro run still running {EXIT_TIMEOUT_S} s after {signum!r}:\n{output.read_text()[-20000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    (run,) = all_runs(project).values()
    return returncode, run


@pytest.mark.slow
def test_sigterm_ends_the_run_killed(project):
    returncode, run = interrupt_a_running_node(project, signal.SIGTERM)

    assert run.info.status == "KILLED"
    assert returncode == 128 + signal.SIGTERM  # what a shell reports for a process killed by SIGTERM
    assert run.data.tags["kedro_env"] == "test"


@pytest.mark.slow
def test_sigint_ends_the_run_killed(project):
    returncode, run = interrupt_a_running_node(project, signal.SIGINT)

    assert run.info.status == "KILLED"
    assert returncode != 0
    assert run.data.tags["kedro_env"] == "test"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_next_run_fails_the_runs_that_dead_processes_of_this_host_left_running(project):
    client = tracking_client(project)
    experiment_id = client.create_experiment("left_running")
    host = socket.gethostname()
    this_process = {"process_id": str(os.getpid()), "process_start_time": repr(psutil.Process().create_time())}
    gone = {"process_id": str(dead_pid()), "process_start_time": "1700000000.0"}
    left_running = {
        "dead_process": {"process_host": host, **gone},
        # The id of a live process, but one started after the run: the run's own process is gone.
        "reused_pid": {"process_host": host, "process_id": str(os.getpid()), "process_start_time": "1700000000.0"},
        "live_process": {"process_host": host, **this_process},
        "other_host": {"process_host": f"not-{host}", **gone},
        "untagged": {},  # e.g. started before this hook existed: nothing tells whether its process is gone
    }
    run_ids = {name: client.create_run(experiment_id, tags=tags).info.run_id for name, tags in left_running.items()}

    run_session(project, ["data_prep"])

    runs = all_runs(project)
    statuses = {name: runs[run_id].info.status for name, run_id in run_ids.items()}
    assert statuses == {
        "dead_process": "FAILED",
        "reused_pid": "FAILED",
        "live_process": "RUNNING",
        "other_host": "RUNNING",
        "untagged": "RUNNING",
    }
    (new_run,) = (run for run_id, run in runs.items() if run_id not in run_ids.values())
    assert new_run.info.status == "FINISHED"
    assert new_run.data.tags["kedro_env"] == "test"
    assert {key: new_run.data.tags[key] for key in ("process_host", *this_process)} == {
        "process_host": host,
        **this_process,
    }


@pytest.mark.slow
def test_a_failing_node_still_ends_the_run_failed(project, monkeypatch):
    from kedro.pipeline import Node

    def failing_node(self, inputs=None):
        raise RuntimeError("node failed")

    monkeypatch.setattr(Node, "run", failing_node)
    with pytest.raises(RuntimeError, match="node failed"):
        run_session(project, ["data_prep"])

    (run,) = all_runs(project).values()
    assert run.info.status == "FAILED"
    assert run.data.tags["kedro_env"] == "test"


@pytest.mark.slow
def test_a_hook_failing_after_the_run_started_ends_it_failed(project, monkeypatch):
    import mlflow

    def broken(*args, **kwargs):
        raise RuntimeError("hook failed")

    # Fails kedro-mlflow's before_pipeline_run after it started the run: no node runs and Kedro calls no error hook.
    # (The package exports its hook instance under the module's name, hence importlib for the module.)
    monkeypatch.setattr(
        importlib.import_module("kedro_mlflow.framework.hooks.mlflow_hook"), "_generate_kedro_command", broken
    )
    with pytest.raises(RuntimeError, match="hook failed"):
        run_session(project, ["data_prep"])
    (run,) = all_runs(project).values()
    left_active = mlflow.active_run() is not None
    while mlflow.active_run():  # keep a failure here from leaking the run into later tests
        mlflow.end_run()

    assert run.info.status == "FAILED"
    assert not left_active


@pytest.mark.parametrize(("env", "expected"), [("test", "test"), (None, "local")])
def test_run_environment_is_the_env_given_or_the_default_run_env(env, expected):
    context = SimpleNamespace(env=env, config_loader=SimpleNamespace(base_env="base", default_run_env="local"))

    assert run_environment(context) == expected


def test_a_ctrl_c_in_a_notebook_cell_ends_the_run_killed_when_the_cell_ends(project, monkeypatch):
    """In IPython a KeyboardInterrupt stops the cell, not the process: no atexit handler runs, and the run must not
    stay RUNNING (nor on mlflow's run stack, where the next pipeline would reuse it)."""
    import mlflow
    from IPython.core.interactiveshell import InteractiveShell
    from kedro.pipeline import Node

    def interrupted(self, inputs=None):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the node runs
        time.sleep(60)
        raise AssertionError("SIGINT raised no KeyboardInterrupt")

    monkeypatch.setattr(Node, "run", interrupted)
    # SIGINT as a kernel has it: delivered (not blocked), and its handler raises KeyboardInterrupt; what ran before in
    # this test worker may have changed either (as_from_a_terminal)
    previous_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    shell = InteractiveShell.instance()
    try:
        shell.user_ns.update(run_session=run_session, project=project)
        result = shell.run_cell("run_session(project, ['data_prep'])")
        left_active = mlflow.active_run() is not None
        while mlflow.active_run():  # keep a failure here from leaking the run into later tests
            mlflow.end_run()
    finally:
        InteractiveShell.clear_instance()
        signal.signal(signal.SIGINT, previous_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    (run,) = all_runs(project).values()
    assert run.info.status == "KILLED"
    assert not left_active
