"""The geometry policy through the real pipeline: the same wrong-geometry algorithm fails
under 'reject' and is scored under 'impose', its case carrying a visible warning (API and
submission page)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backend.db import session_scope
from backend.models import CaseRun, CaseRunStatus, GeometryPolicy, SubmissionStatus
from tests.worker import harness
from tests.worker.conftest import (  # noqa: F401  (fixtures)
    clean_pipeline,
    docker_engine,
    pipeline_env,
    static_images,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker_proc(pipeline_env):  # noqa: F811
    proc = harness.start_worker(pipeline_env, "e2e", concurrency=2)
    yield proc
    harness.stop_worker(proc)


def test_impose_scores_what_reject_fails(clean_pipeline, worker_proc) -> None:  # noqa: F811
    with session_scope() as s:
        reject = harness.seed_phase(s, clean_pipeline.data_dir, slug="reject", n_cases=2)
        impose = harness.seed_phase(s, clean_pipeline.data_dir, slug="impose", n_cases=2,
                                    geometry_policy=GeometryPolicy.IMPOSE)
        ids = {p.slug: harness.submit(s, p, user, "fail-wrong-geometry").id
               for p, user in ((reject, "carol"), (impose, "dave"))}
    subs = harness.wait_done(ids.values(), timeout_s=180)
    assert subs[ids["reject"]].status is SubmissionStatus.FAILED
    assert "spacing" in subs[ids["reject"]].error_message
    assert subs[ids["impose"]].status is SubmissionStatus.SUCCEEDED, \
        subs[ids["impose"]].error_message
    with session_scope() as s:
        runs = s.scalars(select(CaseRun).where(CaseRun.submission_id == ids["impose"])).all()
        assert [r.status for r in runs] == [CaseRunStatus.SUCCEEDED] * 2
        for run in runs:
            assert "input's geometry was imposed" in run.warning
            assert "spacing (2, 2, 5) (input: (1, 1, 2.5))" in run.warning
        rejected = s.scalars(select(CaseRun).where(CaseRun.submission_id == ids["reject"])).all()
        assert all(r.warning == "" for r in rejected)
