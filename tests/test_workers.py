"""`make test` runs two pytest-xdist workers; the tests that read one shared Kedro run must all run on one worker, or
each worker builds that run again (minutes). tests/conftest.py puts them in one xdist group."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_the_tests_of_the_shared_runs_run_in_one_group(request, default_run_project):
    assert "shared_runs" in {mark.args[0] for mark in request.node.iter_markers("xdist_group")}
    if getattr(request.config.option, "loadgroup", False):  # an xdist worker of `--dist loadgroup`
        # the scheduler groups by this suffix; pytest 9.2 drops it (pyproject.toml's pin of pytest)
        assert request.node.nodeid.endswith("@shared_runs"), request.node.nodeid
