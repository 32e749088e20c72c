"""MLflow run bookkeeping: interrupted runs end as KILLED, runs left RUNNING by dead processes become FAILED.

kedro-mlflow starts the run of a `kedro run` in its `before_pipeline_run` and ends it in `after_pipeline_run`
(FINISHED) or `on_pipeline_error` (FAILED). A KeyboardInterrupt (SIGINT) is no `Exception`, so it skips both and
mlflow's own atexit handler then ends the run FINISHED; SIGTERM kills the process with the run left RUNNING, and so
does kill -9. This hook:

- turns SIGTERM into a `SystemExit` that unwinds the run like SIGINT does, and ends an interrupted run KILLED from
  an atexit handler that runs before mlflow's (a run left in progress without a signal ends FAILED);
- tags every run it guards with this process's host, id and start time, and at each start marks FAILED the RUNNING
  runs of this host whose process is gone (kill -9, power loss);
- tags every run with the Kedro environment it ran in (`kedro_env`);
- in IPython (a notebook, `kedro ipython`), where a Ctrl-C stops the cell but not the process, ends the interrupted
  run KILLED as soon as the cell ends, and a run an earlier pipeline of the process left open before the next starts.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import mlflow
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from flat_pipeline.processes import process_is_alive
from flat_pipeline.processes import start_time as process_start_time

logger = logging.getLogger(__name__)

KEDRO_ENV_TAG = "kedro_env"
PROCESS_HOST_TAG = "process_host"
PROCESS_ID_TAG = "process_id"
PROCESS_START_TIME_TAG = "process_start_time"  # seconds since the epoch: tells a reused process id from the old one

KILLED = RunStatus.to_string(RunStatus.KILLED)
FAILED = RunStatus.to_string(RunStatus.FAILED)

# The signals that end a run as KILLED. SIGKILL cannot be caught: the next start marks such a run FAILED.
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def process_tags() -> dict[str, str]:
    """This process's host, id and start time, as run tags."""
    return {
        PROCESS_HOST_TAG: socket.gethostname(),
        PROCESS_ID_TAG: str(os.getpid()),
        PROCESS_START_TIME_TAG: repr(process_start_time()),
    }


def fail_runs_of_dead_processes(host: str) -> list[str]:
    """Mark FAILED the RUNNING runs (of every experiment in the current tracking store) that were started on `host`
    by a process that no longer exists. Runs of other hosts, and runs without a process id, are left alone.

    Returns:
        The ids of the runs marked FAILED.
    """
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"attributes.status = 'RUNNING' and tags.{PROCESS_HOST_TAG} = '{host}'",
        output_format="list",
    )
    failed = []
    for run in runs:
        tags = run.data.tags
        try:
            pid = int(tags[PROCESS_ID_TAG])
            start_time = float(tags[PROCESS_START_TIME_TAG]) if PROCESS_START_TIME_TAG in tags else None
        except (KeyError, ValueError):
            continue
        if process_is_alive(pid, start_time):
            continue
        client.set_terminated(run.info.run_id, FAILED)
        failed.append(run.info.run_id)
        logger.warning(
            "MLflow run '%s' - '%s' was left RUNNING by process %d on %s, which no longer exists: marked FAILED",
            run.info.run_name,
            run.info.run_id,
            pid,
            host,
        )
    return failed


def run_environment(context: KedroContext) -> str:
    """The configuration environment a context runs with."""
    # `context.env` is None when `kedro run` got no --env (nor KEDRO_ENV): the config loader then reads its default
    # run environment (`local`, from settings.CONFIG_LOADER_ARGS), or base alone when that is unset.
    config_loader = context.config_loader
    return context.env or getattr(config_loader, "default_run_env", "") or getattr(config_loader, "base_env", "")


def end_run(run_id: str, status: str) -> None:
    """End `run_id` with `status`, and pop it off this thread's mlflow run stack, so that mlflow's atexit handler does
    not end it again as FINISHED."""
    # kedro-mlflow re-opens the run (nested) in every before_node_run, so the stack can hold it several times.
    popped = False
    while (active := mlflow.active_run()) is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
        popped = True
    if not popped:  # started in another thread, or below a run a node opened
        mlflow.MlflowClient().set_terminated(run_id, status)


class RunStatusHook:
    """Ends interrupted MLflow runs as KILLED, fails the runs that dead processes left RUNNING, and tags runs with the
    Kedro environment and the process that ran them."""

    def __init__(self) -> None:
        self._kedro_env: str | None = None
        self._run_id: str | None = None  # the run kedro-mlflow started for the pipeline now in progress
        self._received_signal: int | None = None
        self._previous_handlers: dict[int, SignalHandler] = {}
        self._exit_handler_registered = False
        self._watched_shell: Any = None  # the IPython shell whose cells end unfinished runs

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._kedro_env = run_environment(context)

    @hook_impl(wrapper=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> Generator[None, Any, Any]:
        # A wrapper: the code after `yield` runs after every other before_pipeline_run, kedro-mlflow's (which
        # starts the run) included, and sees their exceptions, which Kedro's on_pipeline_error never gets.
        # An earlier pipeline of this process that never got to end (a KeyboardInterrupt caught around session.run):
        # its run is ended before kedro-mlflow starts the next, which would otherwise reuse it as an outer run.
        self._end_unfinished_run()
        self._finish_pipeline()
        if not self._exit_handler_registered:
            # Registered after mlflow's own (imported with this module), so it runs first at exit.
            atexit.register(self._end_unfinished_run)
            self._exit_handler_registered = True
        self._watch_ipython_cells()
        self._install_signal_handlers()
        outer_run = mlflow.active_run()  # a run opened before `kedro run`: kedro-mlflow reuses it, its owner ends it
        try:
            result = yield
            self._run_id = self._started_run_id(outer_run)
            if self._run_id is not None:
                mlflow.set_tags(process_tags())
            if mlflow.active_run() is not None:
                mlflow.set_tag(KEDRO_ENV_TAG, self._kedro_env or run_params.get("env") or "")
                self._sweep_runs_of_dead_processes()
        except BaseException:
            # The pipeline does not start (a hook failed, or a signal came), so no hook of Kedro's ends the run.
            self._run_id = self._started_run_id(outer_run)
            self._end_unfinished_run()
            raise
        return result

    @hook_impl(trylast=True)
    def after_pipeline_run(self) -> None:
        # trylast: the signal handlers stay until kedro-mlflow has ended the run.
        self._finish_pipeline()

    @hook_impl(trylast=True)
    def on_pipeline_error(self) -> None:
        # kedro-mlflow has marked the run FAILED; an exception raised by a SIGTERM handler other than ours (which
        # raises SystemExit, not an Exception) still means the run was interrupted.
        if self._run_id is not None and self._received_signal is not None:
            mlflow.MlflowClient().set_terminated(self._run_id, KILLED)
        self._finish_pipeline()

    @staticmethod
    def _started_run_id(outer_run: mlflow.ActiveRun | None) -> str | None:
        """The run kedro-mlflow started for this pipeline, if any (not a run that was open before)."""
        active = mlflow.active_run()
        if active is None or (outer_run is not None and active.info.run_id == outer_run.info.run_id):
            return None
        return active.info.run_id

    @staticmethod
    def _sweep_runs_of_dead_processes() -> None:
        try:
            fail_runs_of_dead_processes(socket.gethostname())
        except MlflowException as error:  # the bookkeeping of older runs must not stop this one
            logger.warning("Could not look for MLflow runs left RUNNING by dead processes: %s", error)

    def _watch_ipython_cells(self) -> None:
        """In IPython, end a run that its cell left open (Ctrl-C stops the cell, the process lives on) when the cell
        ends; a finished pipeline has already cleared its run."""
        ipython_module = sys.modules.get("IPython")  # never imported for a plain `kedro run`
        shell = ipython_module.get_ipython() if ipython_module is not None else None
        if shell is not None and shell is not self._watched_shell:
            shell.events.register("post_run_cell", lambda result: self._end_unfinished_run())
            self._watched_shell = shell

    def _finish_pipeline(self) -> None:
        self._restore_signal_handlers()
        self._run_id = None
        self._received_signal = None

    def _end_unfinished_run(self) -> None:
        """End the pipeline's run when the pipeline did not get to end it: KILLED after SIGINT or SIGTERM, else
        FAILED (an exception in a before_pipeline_run hook, a node calling sys.exit)."""
        # First the previous handlers: a second Ctrl-C or SIGTERM now acts as usual instead of unwinding this.
        self._restore_signal_handlers()
        run_id = self._run_id
        if run_id is None:
            return
        status = KILLED if self._received_signal is not None else FAILED
        self._run_id = None
        end_run(run_id, status)
        if self._received_signal is not None:
            logger.warning(
                "MLflow run '%s' interrupted by %s: marked %s",
                run_id,
                signal.Signals(self._received_signal).name,
                status,
            )
        else:
            logger.warning("MLflow run '%s' left open by a pipeline that did not complete: marked %s", run_id, status)

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        # No logging here: the signal may arrive while the main thread holds a logging or database lock.
        self._received_signal = signum
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)  # SIGINT: Python's default handler raises KeyboardInterrupt
            return
        # The default action would end the process on the spot; unwind instead, with the exit status of a process
        # killed by that signal, so that the run can be ended at exit.
        raise SystemExit(128 + signum)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python runs signal handlers in the main thread only, and only it may set them
        for signum in INTERRUPT_SIGNALS:
            previous = signal.getsignal(signum)
            if previous in (signal.SIG_IGN, None):  # ignored on purpose (nohup, background job), or set outside Python
                continue
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._on_interrupt)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous_handlers.items():
            if signal.getsignal(signum) == self._on_interrupt:
                signal.signal(signum, previous)
        self._previous_handlers.clear()
