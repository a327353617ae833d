"""Write the Grafana dashboards as JSON, or check that the committed JSON is up to date.

``python -m dashboards.grafana.generate`` writes ``json/<uid>.json`` for every dashboard;
``--check`` writes nothing and exits 1 with a unified diff when a committed file differs from
what the code generates, is missing, or is no longer generated (CI runs it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from alerts.generate import check
from dashboards.grafana._build import JSON_DIR, render

__all__ = ["main"]


def _differences(out_dir: Path, files: dict[str, str]) -> list[str]:
    stale = [
        f"{path}: not generated any more; delete it\n"
        for path in sorted(out_dir.glob("*.json"))
        if path.name not in files
    ]
    return [diff for diff in [check(files, out_dir), *stale] if diff]


def main(argv: Sequence[str] | None = None, *, out: TextIO = sys.stdout) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m dashboards.grafana.generate", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=JSON_DIR, help="directory of the JSON files")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        diffs = _differences(args.out, files)
        out.writelines(diffs)
        if diffs:
            out.write(
                "Grafana dashboards are out of date: run python -m dashboards.grafana.generate\n"
            )
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
