"""Leaderboards mean something: on phantom phases imported the way organisers import them,
the shipped baseline (examples/algorithms/python, fitted on training phantoms at build time)
ranks above every trivial output (all zeros, a copy of the input, a constant soft-tissue
value), through the real pipeline: Celery workers, Docker sandboxes, the evaluator and the
phase's ranking."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from backend.datasets import jobs
from backend.datasets.schemas import ImportIn
from backend.db import session_scope
from backend.models import Challenge, Dataset, Phase, PhaseKind, SubmissionStatus
from evaluator.metrics import spec_for
from tests.worker import harness
from tests.worker.conftest import (  # noqa: F401  (fixtures)
    clean_pipeline,
    docker_engine,
    pipeline_env,
    static_images,
)
from tests.worker.helpers import ensure_example

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASELINE = "python"
TRIVIAL = ("trivial-zeros", "trivial-copy", "trivial-soft-tissue")


def _scoring(year: str = "2023") -> tuple[str, list[dict[str, Any]]]:
    """The phantom phases' profile and columns: every group scored without plans, image
    similarity and geometry (HU-threshold on phantoms: the phantom profile)."""
    profile, geometry = f"synthrad{year}-phantom", ["dice_hu", "hd95_hu"]
    ssim = "ssim" if year == "2023" else "ms_ssim"
    return profile, [{"metric": m, "higher_is_better": spec_for(m).higher_is_better}
                     for m in ("psnr", ssim, *geometry)]  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def examples(docker_engine: None) -> list[str]:  # noqa: F811
    return [ensure_example(n) for n in (BASELINE, *TRIVIAL)]


@pytest.fixture(scope="module")
def worker_proc(pipeline_env, examples):  # noqa: F811
    proc = harness.start_worker(pipeline_env, "e2e", concurrency=2)
    yield proc
    harness.stop_worker(proc)


def _phantom_phase(s: Any, anatomy: str, task: str, method: str, year: str) -> Phase:
    """A phase on phantom cases imported through the organisers' importer (seeds other than
    the ones the baseline was fitted on)."""
    challenge = s.scalar(select(Challenge).where(Challenge.slug == "baselines"))
    if challenge is None:
        challenge = Challenge(slug="baselines", title="Baselines")
        s.add(challenge)
        s.flush()
    organiser = harness.user(s, "organiser")
    slug = f"{task}-{anatomy}"
    dataset = Dataset(slug=f"phantom-{slug}", title=slug, challenge_id=challenge.id)
    s.add(dataset)
    s.flush()
    version = jobs.import_now(s, organiser, dataset, ImportIn(
        source="phantom", anatomy=anatomy, cases=2, seed=3,  # type: ignore[arg-type]
        **({"task": task} if task != "mri" else {})))
    profile, columns = _scoring(year)
    phase = Phase(challenge_id=challenge.id, slug=slug, title=slug, kind=PhaseKind.TEST,
                  dataset_version_id=version.id, is_open=True, ranking_method=method,
                  metric_profile=profile, extra_columns=columns, memory_mb=1024, batch_size=2)
    s.add(phase)
    s.flush()
    return phase


@pytest.mark.parametrize(("anatomy", "task", "method", "year"), [
    ("brain", "mri", "mean_rank", "2023"),
    ("pelvis", "mri", "normalized_sum", "2023"),
    ("thorax", "cbct", "grouped_normalized_sum", "2025"),
])
def test_baseline_ranks_above_trivial_outputs(clean_pipeline, worker_proc, anatomy: str,  # noqa: F811
                                              task: str, method: str, year: str) -> None:
    with session_scope() as s:
        phase = _phantom_phase(s, anatomy, task, method, year)
        users = {example: f"team-{example}" for example in (BASELINE, *TRIVIAL)}
        ids = [harness.submit(s, phase, user, example).id for example, user in users.items()]
        phase_id = phase.id
    subs = harness.wait_done(ids, timeout_s=300)
    assert all(x.status is SubmissionStatus.SUCCEEDED for x in subs.values()), \
        {x.id: x.error_message for x in subs.values()}
    from backend.leaderboards import service as leaderboards

    with session_scope() as s:
        phase = s.get(Phase, phase_id)
        assert phase is not None
        board = leaderboards.build(s, None, s.get(Challenge, phase.challenge_id), phase)
    assert [c.metric for c in board.columns] == ["mae",
                                                 *(c["metric"] for c in _scoring(year)[1])]
    ranks = {r.username: r.rank for r in board.rows}
    assert None not in ranks.values(), board.rows  # every row complete and ranked
    baseline = ranks[users[BASELINE]]
    assert baseline == 1, ranks
    for example in TRIVIAL:
        assert ranks[users[example]] > baseline, (example, ranks)
    if task == "cbct":
        return  # a CBCT is nearly a CT already: its copy may match the baseline's geometry
    # Not only the combined rank: on MRI the baseline wins every column on its own.
    values = {r.username: r.values for r in board.rows}
    for col in board.columns:
        mine = values[users[BASELINE]][col.metric]
        others = [values[users[e]][col.metric] for e in TRIVIAL]
        better = (lambda a, b: a > b) if col.higher_is_better else (lambda a, b: a < b)
        assert all(better(mine, o) for o in others), (col.metric, mine, others)
