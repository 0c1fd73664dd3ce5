"""A case scored with a warning (the phase's 'impose' geometry policy) shows it to whoever
sees the case: the submission page's per-case table and the API's case list."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.models import CaseRunStatus, ChallengeRole, GeometryPolicy, Result
from backend.submissions.pipeline import ensure_case_runs
from tests.backend.factories import (
    add_member,
    auth,
    make_challenge,
    make_dataset_version,
    make_phase,
    make_submission,
    make_user,
)
from tests.web.conftest import login

WARNING = "The synthetic CT 1BA001.mha had spacing (2, 2, 5) (input: (1, 1, 2.5)); imposed"


def test_a_case_warning_is_visible(web: TestClient, db_session: Session) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    ph = make_phase(db_session, ch, make_dataset_version(db_session, ch, cases=2),
                    show_case_results=True, geometry_policy=GeometryPolicy.IMPOSE)
    me = make_user(db_session)
    add_member(db_session, ch, me, ChallengeRole.PARTICIPANT)
    sub = make_submission(db_session, ph, me, metrics={"mae": 50.0})
    runs = ensure_case_runs(db_session, sub)
    for run in runs:
        run.status = CaseRunStatus.SUCCEEDED
        db_session.add(Result(submission_id=sub.id, case_id=run.case_id, metrics={"mae": 50.0}))
    runs[0].warning = WARNING
    db_session.flush()

    cases = web.get(f"/api/submissions/{sub.id}/cases", headers=auth(db_session, me))
    assert cases.status_code == 200
    assert sorted(c["warning"] for c in cases.json()) == ["", WARNING]
    login(web, me)
    page = web.get(f"/submissions/{sub.id}", headers={"accept": "text/html"})
    assert page.status_code == 200 and page.text.count("had spacing (2, 2, 5)") == 1
    phase = web.get(f"/api/challenges/{ch.slug}/phases/{ph.slug}",
                    headers=auth(db_session, org)).json()
    assert phase["geometry_policy"] == "impose"
