"""Turning HTML form posts into the services' pydantic inputs, with errors per field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from backend.challenges.schemas import PhaseIn, PhaseSettings
from backend.models import Phase
from evaluator.metrics import DirectionError, resolve_direction, spec_for

BOOL_FIELDS = (
    "is_open",
    "gpu_required",
    "leaderboard_public",
    "show_case_results",
    "show_case_logs",
)
INT_FIELDS = ("submissions_per_period", "submission_period_s", "case_time_limit_s", "memory_mb",
              "batch_size")
FLOAT_FIELDS = ("cpus",)
TEXT_FIELDS = ("slug", "title", "kind", "metric_profile", "ranking_method", "primary_metric",
               "submission_selection", "case_policy", "geometry_policy")


class FormError(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def parse_datetime(raw: str) -> datetime | None:
    """``datetime-local`` values are in UTC (the form says so)."""
    raw = raw.strip()
    if not raw:
        return None
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_datetime(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if value else ""


def parse_extra_columns(raw: str) -> list[dict[str, Any]]:
    """One column per line or comma: ``psnr``, ``hd95 lower``, ``gamma_photon higher dose``.

    The direction word is optional (the metric registry decides; a contradicting one is an
    error); words after it name the column's ranking group (grouped normalised sum).
    """
    cols: list[dict[str, Any]] = []
    for item in raw.replace(",", "\n").splitlines():
        words = item.split()
        if not words:
            continue
        name = words[0]
        direction = words[1].lower() if len(words) > 1 else ""
        if direction not in ("", "higher", "lower"):
            raise FormError({"extra_columns": f"Write “{name}”, “{name} higher” or "
                                              f"“{name} lower” (then, optionally, a group)."})
        declared = direction == "higher" if direction else None
        try:
            hib = resolve_direction(name, declared) if spec_for(name) else declared
        except DirectionError as exc:
            raise FormError({"extra_columns": str(exc)}) from exc
        col: dict[str, Any] = {"metric": name, "higher_is_better": hib}
        if len(words) > 2:
            col["group"] = " ".join(words[2:])
        cols.append(col)
    return cols


def format_extra_columns(cols: list[dict[str, Any]] | None) -> str:
    return "\n".join(
        f"{c['metric']} {'higher' if c.get('higher_is_better') else 'lower'}"
        + (f" {c['group']}" if c.get("group") else "") for c in cols or []
    )


def parse_penalties(raw: str) -> dict[str, float]:
    """One penalty per line or comma: ``mae 500``, ``ms_ssim 0``."""
    out: dict[str, float] = {}
    for item in raw.replace(",", "\n").splitlines():
        words = item.split()
        if not words:
            continue
        try:
            if len(words) != 2:
                raise ValueError
            out[words[0]] = float(words[1])
        except ValueError:
            raise FormError({"case_penalties": f"Write “metric value”, e.g. “mae 500” (got "
                                               f"“{item.strip()}”)."}) from None
    return out


def format_penalties(penalties: dict[str, float] | None) -> str:
    return "\n".join(f"{k} {v:g}" for k, v in (penalties or {}).items())


def phase_values(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Raw form strings to typed values, and every conversion error by field."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key in TEXT_FIELDS:
        if key in form:
            values[key] = form[key].strip()
    if not values.get("case_policy"):
        values.pop("case_policy", None)  # the default for the phase's kind
    for key in BOOL_FIELDS:
        values[key] = form.get(key) in ("on", "true", "1")
    for key in INT_FIELDS:
        raw = form.get(key, "").strip()
        if raw == "":
            if key == "submission_period_s":
                values[key] = None  # empty = the limit covers the whole phase
            continue
        try:
            values[key] = int(raw)
        except ValueError:
            errors[key] = "Enter a whole number."
    for key in FLOAT_FIELDS:
        raw = form.get(key, "").strip()
        if raw:
            try:
                values[key] = float(raw)
            except ValueError:
                errors[key] = "Enter a number."
    for key in ("opens_at", "closes_at"):
        try:
            values[key] = parse_datetime(form.get(key, ""))
        except ValueError:
            errors[key] = "Enter a date and time (YYYY-MM-DD HH:MM, UTC)."
    dataset = form.get("dataset", "").strip()
    if dataset:
        slug, _, version = dataset.partition(":")
        values["dataset"] = slug
        values["dataset_version"] = int(version) if version.isdigit() else None
    try:
        values["extra_columns"] = parse_extra_columns(form.get("extra_columns", ""))
    except FormError as err:
        errors.update(err.errors)
    if "case_penalties" in form:
        try:
            values["case_penalties"] = parse_penalties(form["case_penalties"])
        except FormError as err:
            errors.update(err.errors)
    if values.get("opens_at") and values.get("closes_at") and values["closes_at"] <= values[
        "opens_at"
    ]:
        errors["closes_at"] = "The phase must close after it opens."
    return values, errors


def _errors_of(err: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in err.errors():
        loc = e.get("loc") or ("form",)
        key = str(loc[0])
        msg = str(e.get("msg", "invalid"))
        msg = msg.replace("Input should be", "Must be").replace("String should", "Must")
        out.setdefault(key, msg)
    return out


M = TypeVar("M", PhaseIn, PhaseSettings)


def _validated(model: type[M], values: dict[str, Any], errors: dict[str, str]) -> M:
    """Validate what converted; report conversion and validation errors together."""
    try:
        result = model.model_validate({k: v for k, v in values.items() if k not in errors})
    except ValidationError as err:
        raise FormError({**_errors_of(err), **errors}) from err
    if errors:
        raise FormError(errors)
    return result


def phase_in(form: dict[str, str]) -> PhaseIn:
    values, errors = phase_values(form)
    return _validated(PhaseIn, values, errors)


def phase_settings(form: dict[str, str]) -> PhaseSettings:
    values, errors = phase_values(form)
    values.pop("slug", None)
    return _validated(PhaseSettings, values, errors)


def phase_form_values(phase: Phase | None) -> dict[str, Any]:
    """What the phase form shows: the phase's values, or the model's defaults for a new one."""
    if phase is None:
        defaults: dict[str, Any] = {}
        for col in Phase.__table__.columns:
            if col.default is not None and getattr(col.default, "is_scalar", False):
                defaults[col.key] = col.default.arg
        defaults.update(kind="validation", extra_columns="", opens_at="", closes_at="",
                        dataset="", slug="", title="", case_policy="", case_penalties="")
        for key in ("kind", "ranking_method", "submission_selection", "geometry_policy"):
            value = defaults.get(key)
            defaults[key] = getattr(value, "value", value)
        return defaults
    values = {col.key: getattr(phase, col.key) for col in Phase.__table__.columns}
    for key in ("kind", "ranking_method", "submission_selection", "case_policy",
                "geometry_policy"):
        values[key] = values[key].value
    values["case_penalties"] = format_penalties(phase.case_penalties)
    values["opens_at"] = format_datetime(phase.opens_at)
    values["closes_at"] = format_datetime(phase.closes_at)
    values["extra_columns"] = format_extra_columns(phase.extra_columns)
    if values["submission_period_s"] is None:
        values["submission_period_s"] = ""
    return values
