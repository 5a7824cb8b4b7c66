"""twin.progress: log records instead of bar frames off a terminal, an honest end after early
stopping, nothing when off."""

from __future__ import annotations

import io
import logging
import time

import pytest

from twin.progress import LOGGER, LogProgress, ProgressMode, ProgressSettings, configure_progress, progress_bar, progress_settings


@pytest.fixture
def records():
    before = progress_settings()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    yield stream
    LOGGER.removeHandler(handler)
    configure_progress(before)


def test_log_mode_writes_periodic_lines_and_says_it_stopped_early(records):
    configure_progress(ProgressSettings(ProgressMode.LOG, interval_s=0.02))
    bar = progress_bar(range(1, 301), desc="fit dnn", leave=False)
    assert isinstance(bar, LogProgress)
    for epoch in bar:
        time.sleep(0.001)
        bar.set_postfix(val="-0.5")  # refreshes: must not log a line each time
        if epoch == 50:
            break
    lines = records.getvalue().splitlines()
    assert "\r" not in records.getvalue()
    assert 1 <= len(lines) <= 10
    assert lines[-1].startswith("fit dnn: done, 50 in ") and lines[-1].endswith("stopped early at 50 of 300")
    assert all(line.startswith("fit dnn: ") for line in lines)


def test_a_complete_loop_ends_without_early_note(records):
    configure_progress(ProgressSettings(ProgressMode.LOG, interval_s=10))
    assert sum(progress_bar(range(5), desc="search")) == 10
    assert records.getvalue().splitlines() == [records.getvalue().splitlines()[-1]]
    assert records.getvalue().strip().startswith("search: done, 5 in ") and "early" not in records.getvalue()


def test_off_and_the_callers_disable_show_nothing(records):
    configure_progress(ProgressSettings(ProgressMode.OFF))
    list(progress_bar(range(3), desc="x"))
    configure_progress(ProgressSettings(ProgressMode.LOG))
    list(progress_bar(range(3), desc="y", disable=True))
    assert records.getvalue() == ""
    with pytest.raises(ValueError):
        configure_progress(ProgressSettings(ProgressMode.LOG, interval_s=0))
