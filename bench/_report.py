"""Results of the benchmarks: one figure, its baselines, ratios and goals; printing and saving.

A benchmark returns a ``BenchResult``; ``bench.__main__`` prints each one as it finishes, then a
table of all of them, and writes them to ``bench/results/latest.json``. Goals are reported as
met or missed, never asserted: the figures depend on the machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured quantity: ``best`` is the figure, ``median`` shows the spread."""

    label: str
    best: float
    unit: str
    median: float | None = None
    samples: int = 1


@dataclass(frozen=True, slots=True)
class Goal:
    """A target and whether this run met it."""

    description: str
    met: bool


@dataclass(slots=True)
class BenchResult:
    """Everything one benchmark reports."""

    name: str
    figure: Measurement
    baselines: list[Measurement]
    ratios: dict[str, float]
    goals: list[Goal]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def timings(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    out: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def rate(label: str, work: float, seconds: Sequence[float], unit: str) -> Measurement:
    """``work`` per second: the best (fastest) and median of the timed repeats."""
    return Measurement(
        label,
        best=work / min(seconds),
        unit=unit,
        median=work / statistics.median(seconds),
        samples=len(seconds),
    )


def duration(label: str, seconds: Sequence[float], unit: str = "ms") -> Measurement:
    """The best and median of timed repeats, in ``unit`` (``ms`` or ``s``)."""
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    return Measurement(
        label,
        best=min(seconds) * scale,
        unit=unit,
        median=statistics.median(seconds) * scale,
        samples=len(seconds),
    )


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _measurement(m: Measurement) -> str:
    spread = "" if m.median is None else f" (median {_fmt(m.median)}, n={m.samples})"
    return f"{_fmt(m.best)} {m.unit}{spread}"


def print_result(result: BenchResult) -> None:
    """The benchmark's figure, baselines, ratios and goals, a few lines."""
    print(f"\n== {result.name} ({result.seconds:.1f} s)")
    print(f"  {result.figure.label}: {_measurement(result.figure)}")
    for base in result.baselines:
        print(f"  baseline {base.label}: {_measurement(base)}")
    for label, value in result.ratios.items():
        print(f"  ratio {label}: {_fmt(value)}")
    for goal in result.goals:
        print(f"  goal {goal.description}: {'met' if goal.met else 'MISSED'}")


def _rows(result: BenchResult) -> list[tuple[str, str, str, str]]:
    def value(m: Measurement) -> tuple[str, str]:
        median = "" if m.median is None else f"{_fmt(m.median)} {m.unit}"
        return f"{_fmt(m.best)} {m.unit}", median

    rows = [(result.name, result.figure.label, *value(result.figure))]
    rows += [(result.name, f"baseline: {b.label}", *value(b)) for b in result.baselines]
    rows += [(result.name, f"ratio: {k}", _fmt(v), "") for k, v in result.ratios.items()]
    rows += [
        (result.name, f"goal: {g.description}", "met" if g.met else "MISSED", "")
        for g in result.goals
    ]
    return rows


def print_table(results: Sequence[BenchResult]) -> None:
    """One line per figure, baseline, ratio and goal of every benchmark."""
    rows = [("benchmark", "measurement", "best", "median")]
    for result in results:
        rows += _rows(result)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy

    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def write_results(
    results: Sequence[BenchResult], path: Path, *, quick: bool, seconds: float
) -> None:
    """All results with the machine description, as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "seconds": seconds,
        "machine": machine(),
        "results": [asdict(r) for r in results],
    }
    path.write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    )
