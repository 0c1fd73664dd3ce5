"""``gamma`` and ``dose-metrics`` subcommands of ``python -m evaluator``."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from evaluator.cli import Subcommand, dumps, register
from evaluator.dose.engines import DEFAULT_ENGINE, ENGINES
from evaluator.dose.gamma import GammaSettings, gamma_pass_rate
from evaluator.errors import EvaluationInputError


def _gamma_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ref", required=True, help="reference dose (.mha)")
    p.add_argument("--eval", required=True, help="evaluated dose (.mha, same grid)")
    p.add_argument("--dose-pct", type=float, default=2.0, help="dose criterion, percent")
    p.add_argument("--dta-mm", type=float, default=2.0, help="distance to agreement, mm")
    p.add_argument("--cutoff-pct", type=float, default=None,
                   help="lower dose cutoff, percent of max reference (default: --dose-pct)")
    p.add_argument("--interp-fraction", type=int, default=0,
                   help="search steps per DTA as in pymedphys (0: voxels only, no refinement)")
    p.add_argument("--local", action="store_true", help="local instead of global gamma")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")


def _read_dose(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    import SimpleITK as sitk  # noqa: N813

    try:
        img: Any = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise EvaluationInputError(f"cannot read dose {path}: {exc}") from exc
    return sitk.GetArrayFromImage(img).astype(np.float64), tuple(img.GetSpacing())


def _gamma_run(args: argparse.Namespace) -> int:
    ref, sp_ref = _read_dose(args.ref)
    ev, sp_ev = _read_dose(args.eval)
    if ref.shape != ev.shape or not np.allclose(sp_ref, sp_ev, atol=1e-4):
        raise EvaluationInputError("reference and evaluated doses must share one grid")
    settings = GammaSettings(
        dose_pct=args.dose_pct, dta_mm=args.dta_mm,
        cutoff_pct=args.dose_pct if args.cutoff_pct is None else args.cutoff_pct,
        interp_fraction=args.interp_fraction, local=args.local,
    )
    rate = gamma_pass_rate(ref, ev, sp_ref[::-1], settings, device=args.device)
    print(dumps({"pass_rate": rate, "settings": settings.to_dict()}))
    return 0


def _dose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", required=True, help="case directory with plan_*.json and ct.mha")
    p.add_argument("--sct", required=True, help="synthetic CT (.mha) on the CT grid")
    p.add_argument("--engine", default=DEFAULT_ENGINE, choices=ENGINES)
    p.add_argument("--cache-dir", default=None, help="where CT doses are cached")
    p.add_argument("--device", default="cpu")


def _dose_run(args: argparse.Namespace) -> int:
    from evaluator.dose import dose_metrics_report

    report = dose_metrics_report(args.case, args.sct, args.engine, args.cache_dir, args.device)
    out = dict(report.metrics)
    print(dumps({**out, "engine": report.engine, "gamma_settings": report.gamma_settings}))
    return 0


def register_subcommands() -> None:
    register(Subcommand("gamma", "gamma pass rate of two doses (JSON on stdout)",
                        _gamma_args, _gamma_run))
    register(Subcommand("dose-metrics", "dose metrics of one sCT (JSON on stdout)",
                        _dose_args, _dose_run))


__all__ = ["json", "register_subcommands"]
