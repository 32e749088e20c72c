"""Opening the tune storage (issue 26): a journal that a killed worker cut short in the middle of a record does not
wedge the study; workers that open a new PostgreSQL database at once all start."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import optuna
import pytest

from flat_pipeline.tuning.study import StorageError, open_storage


def _study_with_one_trial(path):
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    study.tell(study.ask(), 1.0)
    return path.read_bytes()


def test_a_record_cut_short_at_the_end_is_removed_and_the_study_goes_on(tmp_path, caplog):
    journal = tmp_path / "optuna.journal"
    whole = _study_with_one_trial(journal)
    with journal.open("ab") as file:
        file.write(b'{"op_code": 4, "worker_id": "a-killed-wor')  # a worker killed in the middle of its write
    with caplog.at_level(logging.WARNING, logger="flat_pipeline.tuning.study"):
        storage = open_storage(str(journal))
    assert journal.read_bytes() == whole
    assert "removing a record cut short at its end (41 bytes, a worker killed while writing it)" in caplog.text
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(study.ask(), 2.0)  # the next worker's records append cleanly
    fresh = optuna.load_study(study_name="s", storage=open_storage(str(journal)))
    assert [t.value for t in fresh.trials] == [1.0, 2.0]


def test_a_journal_already_broken_mid_file_names_the_file_the_line_and_the_way_out(tmp_path):
    journal = tmp_path / "optuna.journal"
    lines = _study_with_one_trial(journal).splitlines(keepends=True)
    lines[1] = b'{"op_code": 4, "wor' + lines[1]  # what Optuna's next append made of a cut record
    journal.write_bytes(b"".join(lines))
    message = (
        rf"^tune storage {journal}: line 2 is not a whole record \(a write cut short, then another appended to it\), "
        rf"so no worker can read the study\. Way out: keep a copy of the file, delete that line \(sed -i '2d' "
        rf"{journal}\) and start the workers again"
    )
    with pytest.raises(StorageError, match=message):
        open_storage(str(journal))


def test_workers_that_open_a_new_postgresql_database_at_once_all_start(postgres):
    """A job array's workers start together on a new database: each creates Optuna's tables, and PostgreSQL refuses
    all but one (a duplicate type in its catalog). The others try again and find the tables."""
    url = postgres.database("race")
    start = time.time() + 6  # every process imported, then all open the database at that instant
    opener = (f"import time; from flat_pipeline.tuning.study import open_storage; "
              f"time.sleep(max(0, {start} - time.time())); open_storage({url!r})")  # fmt: skip
    workers = [subprocess.Popen([sys.executable, "-c", opener], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    failures = [error[-2000:] for worker in workers if (error := worker.communicate()[1]) and worker.returncode]
    assert failures == []
