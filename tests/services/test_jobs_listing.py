"""``mg-tune jobs list``'s "running" column: the run time of running jobs only (issue 29)."""

import time

import pytest
from ray.job_submission import JobDetails, JobStatus, JobType

from mg_tune.jobs.listing import SearchRow


def _row(status: JobStatus, start_s: float | None, end_s: float | None = None) -> SearchRow:
    job = JobDetails(
        type=JobType.SUBMISSION, entrypoint="mg-tune search s.yaml", submission_id="mg-tune-s-1", status=status,
        start_time=None if start_s is None else int(start_s * 1000), end_time=None if end_s is None else int(end_s * 1000),
    )
    return SearchRow("s", job, None)


def test_a_running_job_shows_how_long_it_has_been_running():
    before = time.time()
    running_s = _row(JobStatus.RUNNING, before - 90).running_s
    assert 90 - 1 <= running_s <= 90 + (time.time() - before) + 1


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED])
def test_an_ended_job_shows_no_running_time(status):
    assert _row(status, time.time() - 600, time.time() - 60).running_s is None


def test_a_pending_job_shows_no_running_time():
    assert _row(JobStatus.PENDING, None).running_s is None
