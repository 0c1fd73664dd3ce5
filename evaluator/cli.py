"""``python -m evaluator`` command line.

Subcommands are registered in a small registry, so another module can add its own: define
``register_subcommands()`` in that module (see :data:`PLUGIN_MODULES`) and call
:func:`register` with a :class:`Subcommand` there. Input errors print one line on stderr and
exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from evaluator.aggregation import AGGREGATE_NAMINGS, named_statistics
from evaluator.errors import EvaluationInputError

EXIT_INPUT_ERROR = 2
# Modules imported (when present) to register more subcommands, e.g. gamma / dose-metrics.
PLUGIN_MODULES: tuple[str, ...] = ("evaluator.dose.cli",)


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_REGISTRY: dict[str, Subcommand] = {}


def register(command: Subcommand) -> Subcommand:
    _REGISTRY[command.name] = command
    return command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line on stderr (argparse would also print the usage block).
        self.exit(EXIT_INPUT_ERROR, f"{self.prog}: error: {message}\n")


def _json_value(v: Any) -> Any:
    # JSON has no NaN/Infinity: write them as null ("psnr" of a perfect sCT is +inf).
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    return v


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (NaN/inf become null)."""
    return json.dumps(_json_value(obj), indent=indent, allow_nan=False)


# --- built-in subcommands ----------------------------------------------------------------


def _profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, choices=["synthrad2023", "synthrad2025"])
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")


def _image_metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ct", required=True, type=Path, help="reference CT")
    p.add_argument("--sct", required=True, type=Path, help="synthetic CT")
    p.add_argument("--mask", required=True, type=Path, help="body mask")
    p.add_argument("--timings", action="store_true",
                   help="also print seconds per phase (import, read, check, mask, load, mae, "
                        "psnr, ssim/ms_ssim, ...) as JSON on stderr")
    _profile_arg(p)


def _image_metrics_run(args: argparse.Namespace) -> int:
    import time
    from concurrent.futures import ThreadPoolExecutor

    from evaluator.io import check_pair, read_volumes

    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        # plain .mha files parsed directly (no SimpleITK import), others as views of
        # SimpleITK's buffers (no copy); the three files read concurrently, while this
        # thread imports the metrics code (torch): file reads, zlib and SimpleITK release
        # the GIL, so the import hides (part of) the reading time.
        reading = pool.submit(read_volumes, [args.ct, args.sct, args.mask], copy=False,
                              direct=True)
        from evaluator.image_metrics import compute_image_metrics

        imported = time.perf_counter()
        ct, sct, mask = reading.result()
    # "read": the reading time the import did not hide
    timings = {"import": imported - start, "read": time.perf_counter() - imported}
    checked = time.perf_counter()
    check_pair(ct, sct, mask)
    timings["check"] = time.perf_counter() - checked
    # one case per process: the fused loops only where they are compiled ahead of time
    # (numba's start-up would cost more than they save)
    result = compute_image_metrics(ct.array, sct.array, mask.array, args.profile, args.device,
                                   timings=timings, fused="compiled")
    print(dumps(result))
    if args.timings:
        print(dumps({k: round(v, 4) for k, v in timings.items()}), file=sys.stderr)
    return 0


def _score_dir_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", required=True, type=Path, help="dataset: GT/<case>/ct.mha, mask.mha")
    p.add_argument("--pred", required=True, type=Path,
                   help="predictions: PRED/<case>/sct.mha or PRED/<case>.mha")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    p.add_argument("--segmenter", default="profile",
                   choices=["profile", "threshold", "totalsegmentator", "none"],
                   help="geometry: the profile's segmenter (default), another, or none")
    p.add_argument("--totalseg-weights", type=Path, default=None,
                   help="TotalSegmentator weights directory (profile synthrad2025)")
    p.add_argument("--cache", type=Path, default=None,
                   help="where TotalSegmentator segmentations of the CTs are cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--aggregate-names", default="syntharena", choices=AGGREGATE_NAMINGS,
                   help="statistics named ours (mean std median p25 p75 min max count) or as "
                   "SynthRAD's official evaluation names them (mean max min std 25pc 50pc 75pc "
                   "count; then also its 'results' list of per-case metrics)")
    from evaluator.profiles import PROFILES

    p.add_argument("--profile", required=True, choices=list(PROFILES),
                   help="scoring profile (see evaluator/profiles.py)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")


def _score_dir_run(args: argparse.Namespace) -> int:
    from evaluator.scoring import score_dir
    from evaluator.segmentation import make_segmenter

    segmenter = (None if args.segmenter in ("none", "profile")
                 else make_segmenter(args.segmenter, args.totalseg_weights))
    result = score_dir(args.gt, args.pred, args.profile, device=args.device,
                       segmenter=segmenter, use_labels=args.segmenter != "none",
                       progress=not args.no_progress, weights_dir=args.totalseg_weights,
                       cache_dir=args.cache)
    if args.aggregate_names != "syntharena":
        result["aggregates"] = {m: named_statistics(stats, args.aggregate_names)
                                for m, stats in result["aggregates"].items()}
        result["results"] = [result["cases"][c] for c in sorted(result["cases"])]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(result, indent=2) + "\n")
    errors = result["errors"]
    if errors:
        first = next(iter(errors.items()))
        print(f"error: {len(errors)} of {len(errors) + len(result['cases'])} cases could not be "
              f"scored; first: {first[0]}: {first[1]}", file=sys.stderr)
        return 1
    return 0


def _phantom_args(p: argparse.ArgumentParser) -> None:
    from evaluator.phantom_regions import REGIONS, TASKS

    p.add_argument("--region", "--anatomy", dest="anatomy", required=True, choices=list(REGIONS),
                   help="body region to generate (--anatomy is the older name)")
    p.add_argument("--task", default="mri", choices=list(TASKS),
                   help="mri: MR -> CT cases (mr.mha, ids 1...); cbct: CBCT -> CT cases "
                        "(cbct.mha with CBCT artefacts and a limited field of view, which the "
                        "mask follows; ids 2...)")
    p.add_argument("--synthrad-layout", action="store_true",
                   help="write OUT/Task<1|2>/<region folder>/<case>/ as SynthRAD2025 does "
                        "(e.g. Task2/HN/2HNA001) instead of OUT/<case>/")
    p.add_argument("--cases", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="small", choices=["small", "medium", "realistic"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--plans", action="store_true",
                   help="also write photon/proton plans for the dose metrics")
    p.add_argument("--vary-layout", action="store_true",
                   help="move and resize each case's target and organs (and so its plans) "
                        "per seed; without it the layout is the fixed one")
    p.add_argument("--planner", default="torch_pb", choices=["torch_pb", "pyradplan"],
                   help="who steers and optimises the plans (pyradplan: optional extra; "
                        "its beamlets are listed in the plan and recomputed by torch_pb)")


def _phantom_run(args: argparse.Namespace) -> int:
    from evaluator.phantoms import generate_dataset

    if args.cases < 1:
        raise EvaluationInputError("--cases must be at least 1")
    if args.planner == "pyradplan":
        from evaluator.dose.engines.pyradplan import available

        if not available():
            from evaluator.dose.engines.pyradplan_remote import INSTALL_HINT

            raise EvaluationInputError(f"--planner pyradplan needs pyRadPlan. {INSTALL_HINT}")
    out = args.out
    if args.synthrad_layout:
        from evaluator.phantom_regions import REGIONS, TASKS

        out = out / f"Task{TASKS[args.task]}" / REGIONS[args.anatomy].folder
    dirs = generate_dataset(out, args.anatomy, args.cases, args.seed, args.size,
                            plans=args.plans, planner=args.planner,
                            vary_layout=args.vary_layout, task=args.task)
    print(dumps({"cases": [str(d) for d in dirs]}))
    return 0


register(Subcommand("image-metrics", "image metrics of one sCT (JSON on stdout)",
                    _image_metrics_args, _image_metrics_run))
register(Subcommand("score-dir", "score every case of a dataset (JSON file)",
                    _score_dir_args, _score_dir_run))
register(Subcommand("phantom", "write synthetic MR/CBCT/CT phantom cases (every region)",
                    _phantom_args, _phantom_run))


def _rank_args(p: argparse.ArgumentParser) -> None:
    from evaluator import rank_table

    rank_table.add_arguments(p)


def _rank_run(args: argparse.Namespace) -> int:
    from evaluator import rank_table

    return rank_table.run(args)


register(Subcommand("rank", "rank the teams of a CSV table (JSON {id: rank} on stdout)",
                    _rank_args, _rank_run))


def _load_plugins() -> None:
    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # the plugin module (or its package) does not exist
            # An optional dependency of the plugin is missing: keep the other subcommands.
            print(f"warning: {name} not loaded: {exc}", file=sys.stderr)
            continue
        hook = getattr(module, "register_subcommands", None)
        if callable(hook):
            hook()


def _requested_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first argument not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: plugins are imported, and a subcommand's options added, only
    when needed -- a built-in subcommand then starts without the plugins' imports (the dose
    engines import torch). Without ``argv`` (or for ``--help``) everything is built."""
    command = None if argv is None else _requested_command(argv)
    if command not in _REGISTRY:
        _load_plugins()
    parser = _Parser(prog="python -m evaluator", description="SynthArena evaluator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, entry in _REGISTRY.items():
        p = sub.add_parser(name, help=entry.help)
        if command is None or name == command or command not in _REGISTRY:
            entry.add_arguments(p)
        p.set_defaults(_run=entry.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(argv).parse_args(argv)
    try:
        code: int = args._run(args)
        return code
    except EvaluationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
