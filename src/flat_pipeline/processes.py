"""Whether a process that left a mark (a lock file, an MLflow run) still runs: its id on this host, and its start time,
so that a reused id is not taken for it."""

from __future__ import annotations

import psutil

# psutil derives a start time from boot time and clock ticks; allow for rounding, far below any pid reuse delay.
START_TIME_TOLERANCE_S = 1.0


def start_time() -> float:
    """This process's start time, as `process_is_alive` compares it."""
    return psutil.Process().create_time()


def process_is_alive(pid: int, started: float | None) -> bool:
    """Whether the process `pid` of this host still runs and, when `started` is known, is the one started then."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return False
        created = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's live process: it exists
        return True
    return started is None or abs(created - started) < START_TIME_TOLERANCE_S
