"""Regions and tasks in the backend. Batch mode never puts cases of different regions (or
input modalities) into one container run: the container gets one ``/input/region.json`` for
all its cases. The real pipeline step (``image_loaded``) enqueues into a real Redis list; the
test reads the messages back. The phantom import takes a region and a task."""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import tasks_client
from backend.models import Case, Modality, SubmissionStatus
from backend.submissions import pipeline
from tests.backend import factories as f
from tests.backend.conftest import TaskQueue

# (region, modality) of the phase's cases, interleaved as a mixed dataset's names sort.
KINDS = [("Head and Neck", Modality.CBCT), ("Thorax", Modality.CBCT),
         ("Head and Neck", Modality.CBCT), ("Abdomen", Modality.CBCT),
         ("Thorax", Modality.CBCT), ("Head and Neck", Modality.MRI),
         ("Head and Neck", Modality.CBCT)]


@pytest.fixture
def run_queue(task_queue: TaskQueue, monkeypatch: pytest.MonkeyPatch) -> TaskQueue:
    monkeypatch.setitem(tasks_client.TASK_QUEUES, "cases.run", task_queue.name)
    return task_queue


def _batches(db: Session, queue: TaskQueue,
             batch_size: int) -> tuple[list[list[int]], dict[int, tuple[str, Modality]]]:
    org = f.make_user(db)
    ch = f.make_challenge(db, org)
    version = f.make_dataset_version(db, ch, cases=len(KINDS))
    cases = list(db.scalars(select(Case).where(Case.dataset_version_id == version.id)
                            .order_by(Case.name)))
    for case, (region, modality) in zip(cases, KINDS, strict=True):
        case.region, case.modality = region, modality
    phase = f.make_phase(db, ch, version, batch_size=batch_size)
    sub = f.make_submission(db, phase, org, status=SubmissionStatus.RUNNING)
    db.flush()
    pipeline.image_loaded(sub.id, "sha256:" + "0" * 64)
    by_id = {c.id: c for c in cases}
    kind = {r.id: (by_id[r.case_id].region, by_id[r.case_id].modality)
            for r in pipeline.ensure_case_runs(db, sub)}
    # kombu LPUSHes and its workers BRPOP: the list holds the newest message first
    return [_run_ids(m) for m in reversed(queue.messages())], kind


def _run_ids(message: dict[str, Any]) -> list[int]:
    """The case-run ids of one ``cases.run`` message (Celery's protocol 2 body)."""
    assert message["headers"]["task"] == "cases.run"
    args = json.loads(base64.b64decode(message["body"]))[0]
    return [int(r) for r in args[1]]


def test_batches_split_by_region_and_modality(db_session: Session, run_queue: TaskQueue) -> None:
    batches, kind = _batches(db_session, run_queue, batch_size=2)
    # every case run exactly once, no batch over the size, each batch one region + modality
    assert sorted(r for b in batches for r in b) == sorted(kind)
    assert all(1 <= len(b) <= 2 for b in batches)
    for b in batches:
        assert len({kind[r] for r in b}) == 1, [kind[r] for r in b]
    # and still as few containers as the grouping allows: HN/CBCT 3 -> 2 runs, TH 2 -> 1,
    # AB 1, HN/MRI 1
    assert len(batches) == 5
    sizes = Counter(kind[b[0]] for b in batches)
    assert sizes[("Head and Neck", Modality.CBCT)] == 2


def test_one_case_per_container_keeps_the_case_order(db_session: Session,
                                                     run_queue: TaskQueue) -> None:
    batches, kind = _batches(db_session, run_queue, batch_size=1)
    assert [b[0] for b in batches] == sorted(kind)


def test_phantom_import_of_a_cbct_region(client: TestClient, db_session: Session) -> None:
    """The API's phantom import takes the region and the task: CBCT thorax cases arrive with
    their modality, SynthRAD ids and region, the CBCT as the container's input."""
    from backend.config import settings
    from backend.datasets import jobs

    h, slug = f.api_dataset(client, db_session)
    r = client.post(f"/api/datasets/{slug}/imports", headers=h, json={
        "source": "phantom", "anatomy": "thorax", "task": "cbct", "cases": 2})
    assert r.status_code == 202, r.text
    assert r.json()["source"].endswith(":task=cbct")
    jobs.run(r.json()["id"])
    cases = client.get(f"/api/datasets/{slug}/versions/1/cases", headers=h).json()
    assert [c["name"] for c in cases] == ["2THA001", "2THA002"]
    assert {(c["modality"], c["region"]) for c in cases} == {("cbct", "Thorax")}
    assert all((settings.data_dir / c["input_image_path"]).name == "cbct.mha" for c in cases)
    bad = client.post(f"/api/datasets/{slug}/imports", headers=h, json={
        "source": "phantom", "anatomy": "knee", "task": "cbct"})
    assert bad.status_code == 422 and "head_neck" in bad.text
