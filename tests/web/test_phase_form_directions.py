"""The phase form takes metric directions from the registry (issue 14): no checkbox, and a
direction word that would invert a known metric is a field error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.web import forms
from tests.backend import factories as f
from tests.web.conftest import login


def test_a_contradicting_direction_word_is_a_field_error() -> None:
    with pytest.raises(forms.FormError) as err:
        forms.phase_in({"slug": "p1", "title": "P", "extra_columns": "psnr\nms_ssim lower"})
    assert set(err.value.errors) == {"extra_columns"}
    assert "MS-SSIM" in err.value.errors["extra_columns"]
    phase = forms.phase_in({"slug": "p1", "title": "P",
                            "extra_columns": "psnr\nhd95 lower\ngamma_photon higher photon dose"})
    cols = phase.extra_columns or []
    assert [(c.metric, c.higher_is_better, c.group) for c in cols] == [
        ("psnr", True, None), ("hd95", False, None), ("gamma_photon", True, "photon dose")]
    assert forms.format_extra_columns([c.model_dump() for c in cols]).splitlines()[2] == \
        "gamma_photon higher photon dose"


def test_the_form_has_no_direction_checkbox(web: TestClient, db_session: Session) -> None:
    org = f.make_user(db_session, admin=True)
    ch = f.make_challenge(db_session, org)
    phase = f.make_phase(db_session, ch, primary_metric="psnr", primary_higher_is_better=True)
    login(web, org)
    page = web.get(f"/manage/challenges/{ch.slug}/phases/{phase.slug}")
    assert page.status_code == 200
    assert 'name="primary_higher_is_better"' not in page.text
    assert "primary metric: higher is better" in page.text
