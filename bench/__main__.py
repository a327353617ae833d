"""``python -m bench [--quick] [NAME …]``: run benchmarks, print, save JSON.

Each benchmark prints its figure, baselines, ratios and goals as it finishes; at the end a table
of all of them is printed and every result is written to ``bench/results/latest.json``
(git-ignored). The exit status is 0 even when a goal is missed: figures are reported, not
asserted. It is 1 only when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench._report import BenchResult, print_result, print_table, write_results

BENCHMARKS = {
    "engine": "bench.engine",
    "http": "bench.http_ingest",
    "drift": "bench.drift",
    "memory": "bench.memory",
    "serving": "bench.serving",
    "logger": "bench.logger",
    "shipping": "bench.shipping",
}
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (all by default) in order."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run, among {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)

    started = time.perf_counter()
    results: list[BenchResult] = []
    failed: list[str] = []
    for name in names:
        print(f"running {name}{' (quick)' if args.quick else ''} …", flush=True)
        try:
            module = importlib.import_module(BENCHMARKS[name])
            result: BenchResult = module.run(quick=args.quick)
        except Exception:  # a broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        results.append(result)
        print_result(result)
    seconds = time.perf_counter() - started
    print_table(results)
    write_results(results, args.output, quick=args.quick, seconds=seconds)
    print(f"\n{len(results)} benchmark(s) in {seconds:.0f} s; results in {args.output}")
    if failed:
        print(f"could not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
