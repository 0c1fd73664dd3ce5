"""A phase's scoring profile: known profiles only, and a profile that needs TotalSegmentator
opens (and accepts submissions) only where its weights are configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.challenges.service import accepting_reason
from backend.config import settings
from tests.backend import factories as f
from tests.helpers.totalseg_model import make_totalseg_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_totalseg_weights(tmp_path_factory.mktemp("ts"))


def test_totalsegmentator_phase_opens_only_with_weights(
        client: TestClient, db_session: Session, weights: Path,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(settings, "totalseg_weights_dir", tmp_path / "nothing-here")
    admin = f.make_user(db_session, admin=True)
    h = f.auth(db_session, admin)
    url = f"/api/challenges/{f.make_challenge(db_session, admin).slug}/phases"
    body = {"slug": "geo", "title": "Geometry", "metric_profile": "synthrad2025"}
    r = client.post(url, headers=h, json={**body, "is_open": True})
    assert r.status_code == 400
    message = r.json()["detail"]
    assert "cannot be opened" in message and "TotalSegmentator" in message
    assert "SYNTHARENA_TOTALSEG_WEIGHTS_DIR" in message and "synthrad2025-phantom" in message
    # Closed, it may be prepared; opening it waits for the weights.
    assert client.post(url, headers=h, json=body).status_code == 201
    assert client.patch(f"{url}/geo", headers=h, json={"is_open": True}).status_code == 400
    monkeypatch.setattr(settings, "totalseg_weights_dir", weights)
    r = client.patch(f"{url}/geo", headers=h, json={"is_open": True})
    assert r.status_code == 200 and r.json()["is_open"] is True
    # The phantom profile needs no weights.
    monkeypatch.setattr(settings, "totalseg_weights_dir", None)
    r = client.post(url, headers=h, json={"slug": "ph", "title": "Phantom", "is_open": True,
                                          "metric_profile": "synthrad2025-phantom"})
    assert r.status_code == 201, r.text


def test_unknown_profile_is_refused(client: TestClient, db_session: Session) -> None:
    admin = f.make_user(db_session, admin=True)
    url = f"/api/challenges/{f.make_challenge(db_session, admin).slug}/phases"
    r = client.post(url, headers=f.auth(db_session, admin),
                    json={"slug": "x", "title": "X", "metric_profile": "synthrad2024"})
    assert r.status_code == 400
    assert "Unknown scoring profile 'synthrad2024'" in r.json()["detail"]
    assert "synthrad2025-phantom" in r.json()["detail"]


def test_open_phase_stops_accepting_when_the_weights_go(
        db_session: Session, weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ch = f.make_challenge(db_session)
    phase = f.make_phase(db_session, ch, f.make_dataset_version(db_session, ch),
                         metric_profile="synthrad2025")
    monkeypatch.setattr(settings, "totalseg_weights_dir", weights)
    assert accepting_reason(phase) is None
    monkeypatch.setattr(settings, "totalseg_weights_dir", None)
    reason = accepting_reason(phase)
    assert reason is not None and "cannot accept submissions" in reason
    assert "not configured" in reason
