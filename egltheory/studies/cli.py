"""The flag vocabulary every experiment script shares, with argparse-style usage errors.

``--preset NAME`` (``tiny`` is the smoke-test size everywhere), ``--out DIR`` (checked writable
before any work), ``--resume``, ``--strategies NAME …``, ``--seeds S …`` (a list of distinct
non-negative seeds, the same meaning in every script), ``--cycles N``, ``--no-progress``.
Progress bars are drawn only on a terminal; otherwise one line per finished run is printed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from egltheory.eglpp import LowRank, Sketch
from egltheory.files import check_writable_dir
from egltheory.studies.runner import Protocol

__all__ = [
    "add_output_flags",
    "add_study_flags",
    "check_output",
    "eglpp_estimator",
    "non_negative_int",
    "positive_int",
    "protocol_from_flags",
    "show_progress",
]


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {value}")
        return value

    return parse


non_negative_int = _int_at_least(0)
positive_int = _int_at_least(1)


def add_output_flags(parser: argparse.ArgumentParser, default_out: str, presets) -> None:
    """``--preset``, ``--out``, ``--no-progress`` (every script)."""
    parser.add_argument("--preset", choices=list(presets), default="default",
                        help="size of the run (tiny: smoke test)")  # fmt: skip
    parser.add_argument("--out", default=default_out, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_study_flags(parser: argparse.ArgumentParser, strategies, default_out: str, presets):
    """The output flags plus ``--resume --strategies --seeds --cycles`` (active-learning studies).
    Unset flags keep the preset's value."""
    add_output_flags(parser, default_out, presets)
    parser.add_argument("--resume", action="store_true",
                        help="continue every run from its last finished cycle")  # fmt: skip
    parser.add_argument("--strategies", nargs="+", choices=list(strategies), default=None,
                        metavar="NAME", help=f"subset of {', '.join(strategies)}")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, default=None, metavar="S",
                        help="the paired seeds, e.g. --seeds 0 1 2")  # fmt: skip
    parser.add_argument("--cycles", type=non_negative_int, default=None,
                        help="acquisition cycles (a finished run can be extended)")  # fmt: skip


def protocol_from_flags(
    parser: argparse.ArgumentParser, protocol: Protocol, args: argparse.Namespace, **more
) -> Protocol:
    """``protocol`` with the flags the user set (and ``more`` overrides that are not None);
    a bad combination is a usage error."""
    changes = {
        "strategies": None if args.strategies is None else tuple(args.strategies),
        "seeds": None if args.seeds is None else tuple(args.seeds),
        "n_cycles": args.cycles,
        **more,
    }
    for flag, values in (("--strategies", args.strategies), ("--seeds", args.seeds)):
        if values is not None and len(set(values)) != len(values):
            parser.error(f"{flag} lists a value twice: {' '.join(map(str, values))}")
    try:
        return replace(protocol, **{k: v for k, v in changes.items() if v is not None})
    except ValueError as err:
        parser.error(str(err))


def check_output(parser: argparse.ArgumentParser, out: str) -> None:
    """Refuse an ``--out`` that cannot be written, before any work is done."""
    try:
        check_writable_dir(out, "--out")
    except ValueError as err:
        parser.error(str(err))


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal and without ``--no-progress``."""
    return not args.no_progress and sys.stderr.isatty()


def eglpp_estimator(text: str) -> str | LowRank | Sketch:
    """``--eglpp-estimator``: ``exact``, ``lowrank:M`` or ``sketch:M:P`` (M top directions, P
    probes) → the :mod:`egltheory.eglpp` estimator."""
    name, *numbers = text.split(":")
    try:
        values = [int(v) for v in numbers]
        if name == "exact" and not values:
            return "exact"
        if name == "lowrank" and len(values) == 1:
            return LowRank(*values)
        if name == "sketch" and len(values) in (1, 2):
            return Sketch(*values)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    raise argparse.ArgumentTypeError(f"expected exact, lowrank:M or sketch:M[:P], got {text!r}")
