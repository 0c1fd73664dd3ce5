"""Leaderboard integrity through the real pipeline (real Docker engine, PostgreSQL): the same
algorithm submitted twice ties to the bit, also after re-evaluation; an algorithm that skips
its hardest cases never ranks above an honest copy of itself, under either case policy."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from backend.db import session_scope
from backend.leaderboards import service as leaderboards
from backend.models import (
    AggregateResult,
    CasePolicy,
    CaseRun,
    Challenge,
    Phase,
    RankingMethod,
    Submission,
    SubmissionStatus,
)
from backend.submissions import pipeline, state
from backend.submissions import repository as repo
from tests.worker import harness
from tests.worker.helpers import ensure_example
from worker import steps

pytestmark = pytest.mark.docker
S = SubmissionStatus


@pytest.fixture(scope="module", autouse=True)
def _skip_some_image(docker_engine: None) -> None:
    ensure_example("skip-some")


def _phase(env: Any, slug: str, **settings: Any) -> int:
    with session_scope() as s:
        phase = harness.seed_phase(
            s, env.data_dir, slug=slug, n_cases=4, ranking_method=RankingMethod.MEAN_RANK,
            primary_metric="mae", primary_higher_is_better=False,
            extra_columns=[{"metric": "psnr", "higher_is_better": True}], **settings)
        return phase.id


def _submit(phase_id: int, username: str, example: str) -> int:
    with session_scope() as s:
        phase = s.get(Phase, phase_id)
        assert phase is not None
        return harness.submit(s, phase, username, example).id


def _evaluate(sub_id: int) -> None:
    """Every step of the pipeline, as the workers would run them."""
    steps.start_submission(sub_id)
    with session_scope() as s:
        run_ids = [r.id for r in repo.runs_of(s, sub_id)]
    for rid in run_ids:
        steps.run_cases(sub_id, [rid], worker_name="pytest", gpu=None)
    for rid in run_ids:
        steps.evaluate_case(rid)
    steps.finalize_submission(sub_id)


def _reevaluate(sub_id: int) -> None:
    with session_scope() as s:
        sub = state.lock_submission(s, sub_id)
        repo.clear_evaluation(s, sub_id)
        state.transition(s, sub_id, sub.status, S.PENDING)
    _evaluate(sub_id)


def _aggregate(sub_id: int) -> tuple[S, dict[str, Any] | None, dict[str, Any] | None]:
    with session_scope() as s:
        sub = s.get(Submission, sub_id)
        agg = s.scalar(select(AggregateResult).where(AggregateResult.submission_id == sub_id))
        assert sub is not None
        return sub.status, (agg.metrics if agg else None), (agg.statistics if agg else None)


def _ranks(phase_id: int) -> dict[int, int | None]:
    with session_scope() as s:
        phase = s.get(Phase, phase_id)
        assert phase is not None
        challenge = s.get(Challenge, phase.challenge_id)
        assert challenge is not None
        board = leaderboards.build(s, None, challenge, phase)
        return {r.submission_id: r.rank for r in board.rows}


def test_one_image_from_two_users_ties_to_the_bit(clean_pipeline) -> None:
    phase_id = _phase(clean_pipeline, "twins")
    alice, carol = _submit(phase_id, "alice", "static-c"), _submit(phase_id, "carol", "static-c")
    _evaluate(carol)  # the other order than submitted: completion order must not matter
    _evaluate(alice)
    (st_a, agg_a, _), (st_c, agg_c, _) = _aggregate(alice), _aggregate(carol)
    assert st_a is st_c is S.SUCCEEDED and agg_a is not None
    assert agg_a == agg_c  # every metric, to the last bit (floats compare exactly)
    ranks = _ranks(phase_id)
    assert ranks[alice] == ranks[carol] == 1
    _reevaluate(alice)
    assert _aggregate(alice)[1] == agg_c
    assert _ranks(phase_id) == ranks


def test_fail_policy_fails_a_submission_that_skips_cases(clean_pipeline) -> None:
    phase_id = _phase(clean_pipeline, "strict", case_policy=CasePolicy.FAIL)
    honest = _submit(phase_id, "alice", "static-c")
    picker = _submit(phase_id, "bob", "skip-some")
    _evaluate(honest)
    _evaluate(picker)
    status, agg, _ = _aggregate(picker)
    assert status is S.FAILED and agg is None
    with session_scope() as s:
        sub = s.get(Submission, picker)
        assert sub is not None and "incomplete" in sub.error_message
        assert "'fail' policy" in sub.error_message
        failed = s.scalars(select(CaseRun).where(CaseRun.submission_id == picker,
                                                  CaseRun.status != "succeeded")).all()
        assert len(failed) == 2  # 1BA001 and 1BA003 had no output
    assert _ranks(phase_id) == {honest: 1}


@pytest.mark.parametrize("penalties", [{}, {"mae": 2000.0, "psnr": 0.0}])
def test_worst_policy_never_ranks_the_cherry_picker_above_its_honest_copy(
        clean_pipeline, penalties: dict[str, float]) -> None:
    phase_id = _phase(clean_pipeline, f"lenient-{len(penalties)}", case_policy=CasePolicy.WORST,
                      case_penalties=penalties)
    picker = _submit(phase_id, "bob", "skip-some")
    honest = _submit(phase_id, "alice", "static-c")
    _evaluate(picker)  # first: its missing cases have no other submission to compare with yet
    _evaluate(honest)
    st_p, agg_p, stats_p = _aggregate(picker)
    st_h, agg_h, _ = _aggregate(honest)
    assert st_p is st_h is S.SUCCEEDED and agg_p is not None and agg_h is not None
    assert stats_p is not None and stats_p["policy"] == "worst"
    assert sorted(stats_p["filled"]["mae"]) == ["1BA001", "1BA003"]
    assert stats_p["cases_total"] == 4
    ranks = _ranks(phase_id)
    assert ranks[honest] is not None and ranks[picker] is not None
    assert ranks[honest] <= ranks[picker]
    assert agg_p["mae"] >= agg_h["mae"] and agg_p["psnr"] <= agg_h["psnr"]
    if penalties:
        assert ranks[picker] > ranks[honest] and agg_p["mae"] > agg_h["mae"]
    else:
        # Filled with the honest copy's values (the phase's worst for those cases) once it
        # was scored: exactly its ranked aggregates, a tie. (Metrics the leaderboard does not
        # rank are averaged over the scored cases; their statistics say how many.)
        assert (agg_p["mae"], agg_p["psnr"]) == (agg_h["mae"], agg_h["psnr"])
        assert ranks[picker] == ranks[honest]
        assert stats_p["per_metric"]["ssim"]["count"] == 2
    assert pipeline.filled_cases(stats_p) == {"1BA001", "1BA003"}
