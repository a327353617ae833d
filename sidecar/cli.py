"""The ``python -m sidecar`` command line: build and inspect reference profiles, run the sidecar.

Bad input ends with exit status 2 and one line on stderr naming the column, field or file at
fault; a traceback means a bug. The ``serve`` command lives in ``sidecar.server`` and is imported
only when asked for, so profile commands start fast and work without the server's dependencies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Never, TextIO

from tqdm import tqdm

from sidecar._build_defaults import DEFAULT_KS_BINS, DEFAULT_PSI_BINS, DEFAULT_TOP_K
from sidecar.errors import ModelwatchError
from sidecar.profile import (
    MAX_CATEGORIES,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
    dump_profile,
    load_profile,
)
from sidecar.sketch import DEFAULT_SIZE

if TYPE_CHECKING:
    from sidecar.profile_builder import BuildProgress

EXIT_OK = 0
EXIT_USAGE = 2
"""Bad input: an unusable data file, option or profile (argparse uses the same status)."""

_SERVE = "serve"
_SETUP = "setup"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    stdout, stderr = sys.stdout, sys.stderr
    try:
        parser = _parser(serve_requested=_SERVE in args_list[:1])
    except ModuleNotFoundError as exc:
        print(f"error: serve is unavailable: cannot import module {exc.name!r}", file=stderr)
        return EXIT_USAGE
    args = parser.parse_args(args_list)
    try:
        if args.command == _SERVE:
            from sidecar.server import run_serve  # see _parser: imported only for serve

            return run_serve(args)
        if args.command == _SETUP:
            return _setup(args)
        if args.profile_command == "build":
            return _build(args, stdout, stderr)
        return _show(args, stdout)
    except ModelwatchError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_USAGE


def _parser(*, serve_requested: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sidecar", description="modelwatch monitoring sidecar"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser("profile", help="build or inspect a reference profile")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    build = profile_commands.add_parser(
        "build", help="profile training data (CSV or Parquet) into a JSON reference profile"
    )
    build.add_argument("--data", type=Path, required=True, help="CSV or Parquet training data")
    build.add_argument("--model", required=True, help="model name")
    build.add_argument("--version", required=True, help="model version")
    build.add_argument(
        "--categorical",
        nargs="+",
        action="extend",
        default=[],
        metavar="COL",
        help="treat these columns as categorical (strings and booleans always are)",
    )
    build.add_argument("--prediction-column", metavar="COL", help="column holding the model output")
    build.add_argument(
        "--drop", nargs="+", action="extend", default=[], metavar="COL", help="ignore these columns"
    )
    build.add_argument("--psi-bins", type=int, default=DEFAULT_PSI_BINS, help="PSI bins (10)")
    build.add_argument(
        "--ks-bins", type=int, default=DEFAULT_KS_BINS, help="KS bins, >= 100, a multiple of PSI's"
    )
    build.add_argument(
        "--top-k",
        type=_top_k,
        default=DEFAULT_TOP_K,
        help=f"categories kept per column, 1 to {MAX_CATEGORIES} (50)",
    )
    build.add_argument(
        "--sketch-size", type=int, default=DEFAULT_SIZE, help="quantile sketch values per level"
    )
    build.add_argument("-o", "--output", type=Path, required=True, help="profile JSON to write")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    show = profile_commands.add_parser("show", help="validate a profile and summarise it")
    show.add_argument("path", type=Path, help="profile JSON")

    serve = commands.add_parser(_SERVE, help="run the sidecar (ingest, drift, metrics)")
    if serve_requested:
        # Imported only for `serve`: it pulls in the web server and its dependencies.
        from sidecar.server import add_serve_arguments

        add_serve_arguments(serve)

    setup = commands.add_parser(
        _SETUP,
        help="install the Elasticsearch index templates and lifecycle policy (idempotent)",
        description="Install or update the ILM policy, component and index templates of the "
        "prediction and drift data streams. Credentials, TLS and the namespace come from the "
        "MODELWATCH_ES_* variables (docs/elasticsearch.md). Exit 0 when installed, 1 when "
        "Elasticsearch refused or could not be reached, 2 for a configuration problem.",
    )
    setup.add_argument("--es-url", metavar="URL", help="Elasticsearch URL (env MODELWATCH_ES_URL)")
    setup.add_argument("--rollover-max-age", default="1d", help="roll over after (1d)")
    setup.add_argument(
        "--rollover-max-primary-shard-size", default="50gb", help="roll over past (50gb)"
    )
    setup.add_argument("--retention-days", type=int, default=30, help="delete after days (30)")
    return parser


def _setup(args: argparse.Namespace) -> int:
    # Imported here: the Elasticsearch client is only needed by setup and serve.
    import os

    from sidecar.es_settings import URL_KEY, EsSettings
    from sidecar.es_setup import run_setup
    from sidecar.logs import configure_logging, get_logger

    configure_logging()
    logger = get_logger()
    environ = dict(os.environ)
    if args.es_url:
        environ[URL_KEY] = args.es_url
    elif not environ.get(URL_KEY, "").strip():
        logger.error("es_setup_failed", error=f"{URL_KEY}: is required (or --es-url)")
        return EXIT_USAGE
    try:
        settings = EsSettings.from_environ(environ)
    except ModelwatchError as exc:
        logger.error("es_setup_failed", error=str(exc))
        return EXIT_USAGE
    return run_setup(
        settings,
        logger,
        rollover_max_age=args.rollover_max_age,
        rollover_max_primary_shard_size=args.rollover_max_primary_shard_size,
        retention_days=args.retention_days,
    )


def _top_k(text: str) -> int:
    """``--top-k``: categories become metric series and window bins, so the count is capped."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_CATEGORIES:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CATEGORIES}, got {value}")
    return value


def _build(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    # Imported here so that `serve` never loads pyarrow (see sidecar/_build_defaults.py).
    from sidecar.profile_builder import build_profile

    quiet = args.quiet or not stderr.isatty()
    with tqdm(file=stderr, disable=quiet, unit="B", unit_scale=True, leave=False) as bar:
        progress = _ProgressBar(bar)
        profile = build_profile(
            args.data,
            model=args.model,
            version=args.version,
            categorical=args.categorical,
            prediction_column=args.prediction_column,
            drop=args.drop,
            psi_bins=args.psi_bins,
            ks_bins=args.ks_bins,
            top_k=args.top_k,
            sketch_size=args.sketch_size,
            progress=progress,
        )
    try:
        dump_profile(profile, args.output)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=stderr)
        return EXIT_USAGE
    print(f"wrote {args.output}", file=stdout)
    _print_summary(profile, stdout)
    return EXIT_OK


class _ProgressBar:
    """Drives one tqdm bar through both passes of a build, restarting it for pass 2."""

    def __init__(self, bar: tqdm[Never]) -> None:
        self._bar = bar
        self._phase = 0

    def __call__(self, update: BuildProgress) -> None:
        if update.phase != self._phase:
            self._phase = update.phase
            self._bar.unit = "B" if update.unit == "bytes" else " rows"
            self._bar.reset(total=update.total)
            self._bar.set_description(f"pass {update.phase}/2")
        self._bar.update(update.done - self._bar.n)


def _show(args: argparse.Namespace, stdout: TextIO) -> int:
    profile = load_profile(args.path)
    print(f"{args.path}: valid profile", file=stdout)
    _print_summary(profile, stdout)
    return EXIT_OK


def _print_summary(profile: Profile, out: TextIO) -> None:
    numeric = sum(isinstance(f, NumericProfile) for f in profile.features)
    q = profile.quantiles
    method = (
        "exact"
        if q.name == "exact"
        else f"compactor sketch of {q.sketch_size} values/level, "
        f"rank error <= {q.max_rank_error:.4%} of rows"
    )
    lines = [
        f"model {profile.model} version {profile.version}, created {profile.created_at}",
        f"source {profile.source or '(in memory)'}: {profile.rows} rows",
        f"features: {len(profile.features)} "
        f"({numeric} numeric, {len(profile.features) - numeric} categorical)",
        f"quantiles: {method}",
        "",
        f"{'feature':<28} {'kind':<12} {'missing':>8}  summary",
    ]
    rows = [*profile.features, *([profile.prediction] if profile.prediction else [])]
    for feat in rows:
        name = feat.name if feat is not profile.prediction else f"{feat.name} (prediction)"
        lines.append(f"{name:<28} {feat.kind:<12} {feat.missing_ratio:>8.2%}  {_describe(feat)}")
    print("\n".join(lines), file=out)


def _describe(feat: FeatureProfile) -> str:
    if isinstance(feat, NumericProfile):
        return (
            f"range [{feat.min:.6g}, {feat.max:.6g}], mean {feat.mean:.6g}, "
            f"{len(feat.psi_shares)} PSI bins, {len(feat.ks_edges) + 1} KS bins"
        )
    return _describe_categories(feat)


def _describe_categories(feat: CategoricalProfile) -> str:
    if feat.complete:
        return f"{len(feat.categories)} categories"
    return f"top {len(feat.categories)} of {feat.distinct} categories, other {feat.other_share:.2%}"
