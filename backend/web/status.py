"""How a submission's status reads to a person: label, progress, what to fix."""

from __future__ import annotations

from dataclasses import dataclass

from backend.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    CaseRunStatus,
    Submission,
    SubmissionStatus,
)


@dataclass
class StatusView:
    id: int
    status: str
    label: str
    detail: str
    percent: int
    active: bool
    finished: bool
    error: str
    hint: str
    reload_on_finish: bool = False


# Known failure patterns -> what the participant should change. Matched on lower-case text.
HINTS: list[tuple[tuple[str, ...], str]] = [
    (("timed out", "time limit", "timeout"),
     "Make inference faster (smaller model, fewer test-time augmentations) or ask the "
     "organisers about the per-case time limit."),
    (("out of memory", "oom", "memory limit", "killed"),
     "Lower peak memory: process the volume in patches or slabs, use float16, free the model "
     "after use."),
    (("no output", "missing output", "not written", "was written", "synthetic-ct",
      "synthetic ct"),
     "Write one file per input to /output/images/synthetic-ct/ with the same file name as the "
     "input .mha."),
    (("size", "spacing", "origin", "direction", "geometry"),
     "Copy the input image's geometry to the output (sitk.Image.CopyInformation) and keep "
     "its size."),
    (("nan", "finite", "inf"),
     "The synthetic CT contains NaN or infinite values; clip your output to a HU range."),
    (("exit code", "exited", "non-zero"),
     "Your container exited with an error: read its log below, and run it locally with "
     "`docker run --network none -v $PWD/input:/input:ro -v $PWD/output:/output IMAGE`."),
    (("root",), "Add a non-root USER to your Dockerfile (e.g. `USER 1000`)."),
    (("architecture", "amd64", "arm64"),
     "Build the image for linux/amd64 (`docker buildx build --platform linux/amd64`)."),
]


def hint_for(message: str) -> str:
    low = message.lower()
    for needles, hint in HINTS:
        if any(n in low for n in needles):
            return hint
    return ""


def status_view(
    sub: Submission,
    *,
    failed_case: str | None = None,
    failed_case_status: CaseRunStatus | None = None,
    failed_case_error: str = "",
) -> StatusView:
    st = sub.status
    total, done = sub.cases_total or 0, sub.cases_done or 0
    detail = ""
    if st is SubmissionStatus.PENDING:
        label = "Queued"
        detail = "waiting for a free worker"
        percent = 0
    elif st is SubmissionStatus.RUNNING:
        if done == 0 and "load" in (sub.current_step or ""):
            label = "Loading your image"
            detail = "into the container engine"
        elif total:
            current = min(done + 1, total)
            label = f"Running case {current} of {total}"
        else:
            label = "Running"
            detail = "loading your image"
        percent = int(80 * done / total) if total else 2
    elif st is SubmissionStatus.EVALUATING:
        label = "Scoring"
        detail = f"{total} case{'s' if total != 1 else ''}" if total else ""
        percent = 90
    elif st is SubmissionStatus.SUCCEEDED:
        label = "Done"
        percent = 100
        detail = sub.error_message or ""  # e.g. "1 of 3 cases failed."
    elif st is SubmissionStatus.FAILED:
        label = "Failed"
        percent = 0
    else:
        label = "Cancelled"
        percent = 0
    step = sub.current_step or ""
    # The label already counts cases; the worker's step adds what else is going on.
    if step and st in ACTIVE_STATUSES and not detail and not step.startswith(
        ("running cases", "queued")
    ):
        detail = step
    error = sub.error_message or ""
    if st is SubmissionStatus.FAILED and failed_case and failed_case_error:
        what = "timed out" if failed_case_status is CaseRunStatus.TIMED_OUT else "failed"
        if failed_case_error not in error:
            error = f"{error} Case {failed_case} {what}: {failed_case_error}".strip()
    return StatusView(
        id=sub.id,
        status=st.value,
        label=label,
        detail=detail,
        percent=percent,
        active=st in ACTIVE_STATUSES,
        finished=st in TERMINAL_STATUSES,
        error=error,
        hint=hint_for(error) if st is SubmissionStatus.FAILED else "",
    )
