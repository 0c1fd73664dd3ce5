"""Directions from the metric registry, ±inf on the leaderboard, grouped ranking (issue 14)."""

from __future__ import annotations

import csv
import io
import json

from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from backend.models import AggregateResult, RankingMethod
from evaluator.aggregation import decode_metrics, encode_metrics
from tests.backend import factories as f


def _phase_api(client: TestClient, db_session: Session):  # type: ignore[no-untyped-def]
    admin = f.make_user(db_session, admin=True)
    h = f.auth(db_session, admin)
    ch = f.make_challenge(db_session, admin)
    return h, f"/api/challenges/{ch.slug}/phases"


def test_api_refuses_an_inverted_known_metric(client: TestClient, db_session: Session) -> None:
    h, url = _phase_api(client, db_session)
    r = client.post(url, headers=h, json={
        "slug": "test", "title": "Test", "primary_metric": "mae",
        "extra_columns": [{"metric": "ms_ssim", "higher_is_better": False}]})
    assert r.status_code == 422
    [error] = r.json()["detail"]  # FastAPI's 422 shape, as the OpenAPI schema says
    assert "MS-SSIM" in error["msg"] and "cannot be inverted" in error["msg"]
    r = client.post(url, headers=h, json={"slug": "test", "title": "Test",
                                          "primary_metric": "mae",
                                          "primary_higher_is_better": True})
    assert r.status_code == 422 and "MAE" in r.json()["detail"][0]["msg"]
    # Without directions the registry's are stored; a matching one is accepted.
    r = client.post(url, headers=h, json={
        "slug": "test", "title": "Test", "primary_metric": "psnr",
        "extra_columns": [{"metric": "dice"}, {"metric": "hd95", "higher_is_better": False}]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["primary_higher_is_better"] is True
    assert body["extra_columns"] == [{"metric": "dice", "higher_is_better": True},
                                     {"metric": "hd95", "higher_is_better": False}]
    r = client.patch(f"{url}/test", headers=h, json={"primary_metric": "mae"})
    assert r.status_code == 200 and r.json()["primary_higher_is_better"] is False
    r = client.patch(f"{url}/test", headers=h, json={"primary_higher_is_better": True})
    assert r.status_code == 422


def test_a_stored_inverted_direction_is_ignored(client: TestClient, db_session: Session) -> None:
    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    # Saved before directions were checked: "higher MAE is better", "lower PSNR is better".
    phase = f.make_phase(db_session, ch, primary_higher_is_better=True,
                         ranking_method=RankingMethod.ABSOLUTE,
                         extra_columns=[{"metric": "psnr", "higher_is_better": False}])
    good, bad = f.make_user(db_session), f.make_user(db_session)
    f.make_submission(db_session, phase, bad, metrics={"mae": 90.0, "psnr": 20.0})
    f.make_submission(db_session, phase, good, metrics={"mae": 40.0, "psnr": 35.0})
    board = client.get(f"/api/challenges/{ch.slug}/phases/{phase.slug}/leaderboard").json()
    assert [r["username"] for r in board["rows"]] == [good.username, bad.username]
    assert [c["higher_is_better"] for c in board["columns"]] == [False, True]


def test_inf_psnr_is_stored_as_text_and_ranks_first(
    client: TestClient, db_session: Session
) -> None:
    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    phase = f.make_phase(db_session, ch, primary_metric="psnr", primary_higher_is_better=True,
                         ranking_method=RankingMethod.ABSOLUTE,
                         extra_columns=[{"metric": "mae", "higher_is_better": False}])
    perfect, good, failed = (f.make_user(db_session) for _ in range(3))
    f.make_submission(db_session, phase, good, metrics=encode_metrics({"psnr": 45.0,
                                                                       "mae": 5.0}))
    sub = f.make_submission(db_session, phase, perfect,
                            metrics=encode_metrics({"psnr": float("inf"), "mae": 0.0}))
    f.make_submission(db_session, phase, failed,
                      metrics=encode_metrics({"psnr": float("nan"), "mae": 1.0}))
    db_session.expire_all()
    stored = db_session.scalars(
        select(AggregateResult).where(AggregateResult.submission_id == sub.id)).one()
    assert stored.metrics["psnr"] == "inf"
    assert decode_metrics(stored.metrics) == {"psnr": float("inf"), "mae": 0.0}
    url = f"/api/challenges/{ch.slug}/phases/{phase.slug}/leaderboard"
    rows = client.get(url).json()["rows"]
    assert [(r["username"], r["rank"]) for r in rows] == [
        (perfect.username, 1), (good.username, 2), (failed.username, None)]
    assert rows[0]["values"]["psnr"] == "Infinity" and rows[2]["values"]["psnr"] is None
    table = list(csv.DictReader(io.StringIO(client.get(url + ".csv").text)))
    assert table[0]["psnr"] == "inf"


def test_encoded_values_round_trip_through_postgres_jsonb(db_session: Session) -> None:
    values = {"psnr": float("inf"), "mae": 0.1 + 0.2, "dice": float("-inf"), "hd95": None}
    stored = json.dumps(encode_metrics(values), allow_nan=False)
    back = db_session.execute(text("SELECT CAST(:v AS jsonb)"), {"v": stored}).scalar_one()
    assert decode_metrics(back) == values


def test_grouped_normalized_sum_with_phase_groups(
    client: TestClient, db_session: Session
) -> None:
    h, url = _phase_api(client, db_session)
    r = client.post(url, headers=h, json={
        "slug": "g", "title": "Grouped", "primary_metric": "mae",
        "ranking_method": "grouped_normalized_sum",
        "extra_columns": [{"metric": "mae", "group": "error"},
                          {"metric": "psnr", "group": "similarity"},
                          {"metric": "ms_ssim", "group": "similarity"}]})
    assert r.status_code == 201, r.text
    from backend.models import Phase

    phase = db_session.get(Phase, r.json()["id"])
    assert phase is not None
    img, err = f.make_user(db_session), f.make_user(db_session)
    # "img" wins both similarity metrics, "err" the error: the groups weigh 1:1 -> a tie
    f.make_submission(db_session, phase, img, metrics={"mae": 60.0, "psnr": 32.0,
                                                       "ms_ssim": 0.95})
    f.make_submission(db_session, phase, err, metrics={"mae": 50.0, "psnr": 30.0,
                                                       "ms_ssim": 0.90})
    ch_slug = url.split("/")[3]
    board = client.get(f"/api/challenges/{ch_slug}/phases/g/leaderboard").json()
    assert [r["rank"] for r in board["rows"]] == [1, 1]
    assert board["rows"][0]["score"] == 0.5
    # Plain sum: 2 metrics beat 1 (through the API, which invalidates the stored board).
    r = client.patch(f"{url}/g", headers=h, json={"ranking_method": "normalized_sum"})
    assert r.status_code == 200, r.text
    board = client.get(f"/api/challenges/{ch_slug}/phases/g/leaderboard").json()
    assert [(r["username"], r["rank"]) for r in board["rows"]] == [(img.username, 1),
                                                                   (err.username, 2)]


def test_adjacent_significance_on_the_leaderboard(
    client: TestClient, db_session: Session
) -> None:
    from backend.models import Case, Result

    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    version = f.make_dataset_version(db_session, ch, cases=12)
    phase = f.make_phase(db_session, ch, version, ranking_method=RankingMethod.ABSOLUTE)
    cases = db_session.scalars(select(Case).where(Case.dataset_version_id == version.id)
                               .order_by(Case.id)).all()
    users = [f.make_user(db_session) for _ in range(3)]
    # "best" beats "mid" on every case by ~10 HU; "mid" and "twin" differ by noise only.
    offsets = {0: lambda i: 40.0 + i, 1: lambda i: 50.0 + i + (0.1 if i % 2 else -0.1),
               2: lambda i: 50.0 + i + (-0.1 if i % 2 else 0.1)}
    subs = []
    for k, user in enumerate(users):
        values = [offsets[k](i) for i in range(len(cases))]
        sub = f.make_submission(db_session, phase, user,
                                metrics={"mae": sum(values) / len(values), "psnr": 30.0})
        for case, v in zip(cases, values, strict=True):
            db_session.add(Result(submission_id=sub.id, case_id=case.id,
                                  metrics={"mae": v, "psnr": 30.0}))
        subs.append(sub)
    db_session.flush()
    url = f"/api/challenges/{ch.slug}/phases/{phase.slug}/leaderboard"
    board = client.get(url).json()
    pairs = [(p["upper_submission_id"], p["lower_submission_id"], p["metric"],
              p["significant"]) for p in board["significance"]]
    assert pairs[0] == (subs[0].id, board["rows"][1]["submission_id"], "mae", True)
    assert pairs[1][3] is False and len(pairs) == 2  # absolute: the primary metric only
    assert [r["significant_vs_next"] for r in board["rows"]] == [True, False, None]
    # A page carries the tests of its own rows against their next row only.
    paged = [client.get(url, params={"offset": k, "limit": 1}).json() for k in range(3)]
    assert [[(p["upper_submission_id"], p["lower_submission_id"]) for p in b["significance"]]
            for b in paged] == [[(subs[0].id, board["rows"][1]["submission_id"])],
                                [(board["rows"][1]["submission_id"],
                                  board["rows"][2]["submission_id"])], []]
    table = list(csv.DictReader(io.StringIO(client.get(url + ".csv").text)))
    assert [t["significant_vs_next"] for t in table] == ["1", "0", ""]
    assert float(table[0]["p_holm_vs_next"]) < 0.05
