from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.leaderboards.ranking import Column, competition_ranks, rank_rows
from backend.models import RankingMethod, SubmissionSelection, SubmissionStatus
from tests.backend import factories as f

S = SubmissionStatus


def test_competition_ranks_ties_and_missing() -> None:
    assert competition_ranks([1.0, 1.0, 2.0, None], higher_is_better=False) == [1, 1, 3, None]
    assert competition_ranks([3.0, 5.0, 5.0], higher_is_better=True) == [3, 1, 1]


def test_rank_methods() -> None:
    cols = [Column("mae", False), Column("psnr", True)]
    rows: list[dict[str, object]] = [{"mae": 50.0, "psnr": 30.0}, {"mae": 60.0, "psnr": 32.0},
                                     {"mae": 70.0, "psnr": 20.0}, {"mae": float("nan"),
                                                                   "psnr": 40.0}]
    absolute = rank_rows(rows, cols, RankingMethod.ABSOLUTE)
    assert [r.rank for r in absolute] == [1, 2, 3, None]
    mean = rank_rows(rows, cols, RankingMethod.MEAN_RANK)
    assert [r.score for r in mean] == [1.5, 1.5, 3.0, None]
    assert [r.rank for r in mean] == [1, 1, 3, None]
    norm = rank_rows(rows, cols, RankingMethod.NORMALIZED_SUM)
    assert norm[3].rank is None and norm[0].rank == 1


def _board(db_session: Session, **phase_kw):  # type: ignore[no-untyped-def]
    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    phase = f.make_phase(db_session, ch, f.make_dataset_version(db_session, ch), **phase_kw)
    return org, ch, phase


def test_leaderboard_rows_selection_and_csv(client: TestClient, db_session: Session) -> None:
    org, ch, phase = _board(db_session, ranking_method=RankingMethod.MEAN_RANK)
    alice, bob, carol, dave, eve = (f.make_user(db_session) for _ in range(5))
    best = f.make_submission(db_session, phase, alice, metrics={"mae": 50.0, "psnr": 31.0})
    f.make_submission(db_session, phase, alice, metrics={"mae": 60.0, "psnr": 30.0})
    f.make_submission(db_session, phase, bob, metrics={"mae": 55.0, "psnr": 33.0})
    f.make_submission(db_session, phase, carol, metrics={"mae": None, "psnr": 35.0})
    f.make_submission(db_session, phase, dave, status=S.FAILED)
    f.make_submission(db_session, phase, dave, metrics={"mae": 1.0, "psnr": 99.0},
                      is_hidden=True)
    f.make_submission(db_session, phase, eve, metrics={"mae": 2.0, "psnr": 90.0},
                      is_disqualified=True)
    f.make_submission(db_session, phase, org, metrics={"mae": 80.0, "psnr": 25.0},
                      is_baseline=True)
    url = f"/api/challenges/{ch.slug}/phases/{phase.slug}/leaderboard"
    board = client.get(url).json()
    rows = board["rows"]
    assert [r["username"] for r in rows] == [alice.username, bob.username, carol.username,
                                            org.username, eve.username]
    assert [r["rank"] for r in rows] == [1, 1, None, None, None]
    assert rows[0]["submission_id"] == best.id and rows[0]["ranks"] == {"mae": 1, "psnr": 2}
    assert rows[3]["is_baseline"] and rows[4]["is_disqualified"]
    assert [c["metric"] for c in board["columns"]] == ["mae", "psnr"]
    r = client.get(url + ".csv")
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert table[0]["username"] == alice.username and table[0]["mae"] == "50.0"
    assert table[2]["rank"] == "" and table[2]["mae"] == ""
    # Most recent instead of best (the settings change recomputes the stored leaderboard).
    r = client.patch(f"/api/challenges/{ch.slug}/phases/{phase.slug}",
                     json={"submission_selection": SubmissionSelection.LATEST.value},
                     headers=f.auth(db_session, org))
    assert r.status_code == 200, r.text
    rows = client.get(url).json()["rows"]
    assert rows[0]["username"] == bob.username


def test_hidden_leaderboard(client: TestClient, db_session: Session) -> None:
    org, ch, phase = _board(db_session, leaderboard_public=False)
    user = f.make_user(db_session)
    f.add_member(db_session, ch, user)
    sub = f.make_submission(db_session, phase, user, metrics={"mae": 1.0})
    url = f"/api/challenges/{ch.slug}/phases/{phase.slug}/leaderboard"
    assert client.get(url).status_code == 403
    assert client.get(url, headers=f.auth(db_session, user)).status_code == 403
    assert client.get(url, headers=f.auth(db_session, org)).status_code == 200
    # Their own scores are hidden too.
    own = client.get(f"/api/submissions/{sub.id}", headers=f.auth(db_session, user)).json()
    assert own["metrics"] is None
