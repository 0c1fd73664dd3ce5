"""The fused loops of :mod:`evaluator.image_kernels` compiled ahead of time into a C extension.

numba compiles the loops on first use and caches them on disk, but a fresh process still pays
~0.3 CPU s to import numba and ~0.5 s to load the cached code: more than the loops save on one
case, so the one-case ``python -m evaluator image-metrics`` ran torch's slower passes. Built
ahead of time (numba's ``pycc``; a C compiler is needed for the build only), the same loops
load in about a millisecond without numba.

    python -m evaluator.image_kernels_aot      # build next to this file (setup does it)

The extension's name carries a hash of the kernels' source and of the signatures below, so a
build of other code is never loaded (it is simply not found). It is compiled for x86-64 with
AVX2 and FMA (``haswell``) and used only where torch's CPU kernels are AVX2/AVX512 ones (the
same gate as the JIT loops). Same LLVM code, no fast-math: the same bits as the JIT loops and
as torch's passes (tests).

numba's ``pycc`` does not check an array's memory layout against the exported signature, so
every array passes through :func:`_contiguous_call` (a C-contiguous copy, written back for
outputs, where an array is strided).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.machinery
import importlib.util
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PREFIX = "_image_kernels_"
TARGET_CPU = "haswell"  # AVX2 + FMA: what torch's AVX2/AVX512 CPU kernels need as well
# dtypes score_slice reads directly (others are converted to float64 by torch first)
DIRECT = {"float32": "f4", "float64": "f8", "int16": "i2"}

_A2, _A3, _U3, _T3 = "f8[:, ::1]", "f8[:, :, ::1]", "u1[:, :, ::1]", "UniTuple(i8, 3)"
# kernel -> (signature, indices of the arrays it writes)
SIGNATURES: dict[str, tuple[str, tuple[int, ...]]] = {
    "zsum_add": (f"void({_A3}, {_A2}, {_A2})", (0,)),
    "zsum_slide": (f"void({_A3}, {_A2}, {_A2}, {_A2}, {_A2})", (0,)),
    "plane_map": (f"void({_A3}, i8, i8, i8, i8, {_U3}, {_T3}, f8, f8, b1, b1, {_A2}, {_A2})",
                  (11, 12)),
    "mask_mul": (f"void({_A2}, {_U3}, {_T3})", (0,)),
    "down_slice": (f"void({_A3}, f8[:, :, :, ::1], {_T3}, b1)", (1,)),
}
_SCORE = ("void({a}[:, :, ::1], {b}[:, :, ::1], " + f"{_T3}, {_T3}, {_U3}, {_T3}, f8, f8, "
          + f"{_A2}, {_A2}, {_A2}, {_A2})")
_SCORE_WRITES = (8, 9, 10, 11)


def _exports() -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """Exported name -> (kernel, signature, written arrays)."""
    out = {name: (name, sig, writes) for name, (sig, writes) in SIGNATURES.items()}
    for a in DIRECT.values():
        for b in DIRECT.values():
            out[f"score_slice_{a}_{b}"] = ("score_slice", _SCORE.format(a=a, b=b),
                                           _SCORE_WRITES)
    return out


def module_name() -> str:
    """The extension's module name for the current kernels' source and signatures."""
    h = hashlib.sha256((HERE / "image_kernels.py").read_bytes())
    h.update(repr((sorted(_exports().items()), TARGET_CPU)).encode())
    return PREFIX + h.hexdigest()[:16]


def supported() -> bool:
    """Whether this machine can build and run the extension (x86-64)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def build(out_dir: Path = HERE) -> Path:
    """Compile the extension into ``out_dir`` (seconds; needs numba and a C compiler) and
    remove builds of other versions there. Returns its path."""
    if not supported():
        raise RuntimeError(f"ahead-of-time loops are built for x86-64 only, not "
                           f"{platform.machine()}")
    with warnings.catch_warnings():  # pycc is deprecated in favour of a successor not yet out
        warnings.simplefilter("ignore")
        from evaluator import image_kernels

        pycc: Any = importlib.import_module("numba.pycc")  # untyped

        if image_kernels.KERNELS is None:
            raise RuntimeError("numba is not installed: nothing to compile")
        name = module_name()
        cc = pycc.CC(name)
        cc.output_dir = str(out_dir)
        cc.target_cpu = TARGET_CPU
        cc.verbose = False
        for export, (kernel, sig, _writes) in _exports().items():
            cc.export(export, sig)(getattr(image_kernels, kernel).py_func)
        cc.compile()
    built = [out_dir / f"{name}{s}" for s in importlib.machinery.EXTENSION_SUFFIXES
             if (out_dir / f"{name}{s}").is_file()]
    if not built:
        raise RuntimeError(f"numba's compiler wrote no {name} extension into {out_dir}")
    for old in out_dir.glob(f"{PREFIX}*"):
        if not old.name.startswith(name + "."):
            old.unlink(missing_ok=True)
    return built[0]


def _contiguous_call(fn: Callable[..., None], writes: tuple[int, ...]) -> Callable[..., None]:
    """``fn`` with every strided array argument passed as a C-contiguous copy (written back
    where ``fn`` writes it): the compiled code assumes the layout its signature names."""

    def call(*args: Any) -> None:
        back: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
        fixed = list(args)
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
                fixed[i] = c = np.ascontiguousarray(a)
                if i in writes:
                    back.append((a, c))
        fn(*fixed)
        for a, c in back:
            a[...] = c

    return call


def _namespace(mod: ModuleType, path: Path) -> SimpleNamespace:
    """The extension's loops under the names and signatures of ``image_kernels.KERNELS``;
    ``direct``: the dtypes (names) score_slice reads without a conversion."""
    exports = _exports()
    ns = SimpleNamespace(direct=frozenset(DIRECT), compiled=True, path=path)
    for name, (_kernel, _sig, writes) in exports.items():
        setattr(ns, name, _contiguous_call(getattr(mod, name), writes))
    by_dtype = {(np.dtype(a), np.dtype(b)): getattr(ns, f"score_slice_{ca}_{cb}")
                for a, ca in DIRECT.items() for b, cb in DIRECT.items()}

    def score_slice(ct: np.ndarray[Any, Any], sct: np.ndarray[Any, Any], *rest: Any) -> None:
        by_dtype[ct.dtype, sct.dtype](ct, sct, *rest)

    ns.score_slice = score_slice
    return ns


def load(directory: Path = HERE) -> SimpleNamespace | None:
    """The compiled loops built from the current source in ``directory``, else None."""
    if not supported():
        return None
    name = module_name()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:  # this interpreter's ABI only
        path = directory / f"{name}{suffix}"
        if not path.is_file():
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            continue
        try:
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        except ImportError:  # built for another Python
            continue
        return _namespace(mod, path)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="compile the fused image-metric loops ahead of "
                                            "time (numba pycc; needs a C compiler)")
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: the "
                                                          "evaluator package)")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when the current build is there")
    p.add_argument("--best-effort", action="store_true",
                   help="exit 0 with a note when it cannot be built (no compiler, no numba)")
    args = p.parse_args(argv)
    if args.if_missing and load(args.out) is not None:
        print(f"image-metric loops: {module_name()} is built")
        return 0
    try:
        path = build(args.out)
    except Exception as exc:  # reported; the platform runs without it
        msg = f"image-metric loops not compiled ahead of time ({exc})"
        if args.best_effort:
            print(msg + ": numba's JIT (workers) or torch's passes (CLI) run instead")
            return 0
        print(msg, file=sys.stderr)
        return 1
    print(f"image-metric loops compiled: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
