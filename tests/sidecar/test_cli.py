"""The ``python -m sidecar profile`` commands end to end, through ``main([...])``."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from sidecar.cli import main
from sidecar.profile import CategoricalProfile, NumericProfile, dump_profile, load_profile
from tests.support.profiles import make_profile
from tests.support.sidecar_dirs import dirs_environ


def _training_csv(tmp_path: Path, rows: int = 3_000) -> Path:
    rng = np.random.default_rng(21)
    income = rng.lognormal(10, 1, size=rows)
    income[::10] = np.nan
    table = pa.table(
        {
            "income": income,
            "segment": rng.choice(["retail", "sme", "corporate"], size=rows),
            "rating": rng.integers(1, 6, size=rows),
            "row_id": np.arange(rows),
            "approved": rng.integers(0, 2, size=rows),
        }
    )
    path = tmp_path / "train.csv"
    pa_csv.write_csv(table, path)
    return path


def _build_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "profile",
        "build",
        "--data",
        str(data),
        "--model",
        "credit",
        "--version",
        "7",
        "-o",
        str(out),
        *extra,
    ]


def test_build_writes_a_valid_profile_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`profile build` writes a loadable profile and summarises rows, kinds, missing and method."""
    out = tmp_path / "profile.json"
    args = _build_args(
        _training_csv(tmp_path),
        out,
        "--categorical",
        "rating",
        "--prediction-column",
        "approved",
        "--drop",
        "row_id",
        "--sketch-size",
        "1000",
        "--ks-bins",
        "100",
        "--quiet",
    )
    assert main(args) == 0
    profile = load_profile(out)
    assert profile.feature_names == ("income", "segment", "rating")
    assert isinstance(profile.feature("rating"), CategoricalProfile)
    assert isinstance(profile.prediction, NumericProfile)
    assert profile.quantiles.name == "compactor-sketch"
    assert len(_numeric_ks_edges(out)) <= 99
    printed = capsys.readouterr()
    assert str(out) in printed.out
    assert "3000 rows" in printed.out
    assert "1 numeric, 2 categorical" in printed.out
    assert "10.00%" in printed.out  # income's missing ratio
    assert "compactor sketch of 1000 values/level" in printed.out
    assert printed.err == ""  # no progress bar when stderr is not a terminal


def _numeric_ks_edges(path: Path) -> list[float]:
    doc = orjson.loads(path.read_bytes())
    edges: list[float] = doc["features"][0]["ks"]["edges"]
    return edges


def test_show_validates_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`profile show` loads a built profile and prints the same summary."""
    out = tmp_path / "p.json"
    assert main(_build_args(_training_csv(tmp_path), out)) == 0
    capsys.readouterr()
    assert main(["profile", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "valid profile" in shown
    assert "model credit version 7" in shown
    assert "quantiles: exact" in shown
    assert "segment" in shown


def test_build_names_an_unknown_column_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --categorical column absent from the data exits 2 with one line naming it."""
    out = tmp_path / "p.json"
    code = main(_build_args(_training_csv(tmp_path), out, "--categorical", "colour"))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'colour'" in err
    assert not out.exists()


def test_build_refuses_bad_bin_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--ks-bins that is not a multiple of --psi-bins exits 2 naming ks_bins."""
    code = main(_build_args(_training_csv(tmp_path), tmp_path / "p.json", "--ks-bins", "105"))
    assert code == 2
    assert "ks_bins" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["100000", "0"])
def test_build_refuses_a_top_k_outside_1_to_1000(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """--top-k above the 1 000-category cap, or below 1, exits 2 naming --top-k."""
    out = tmp_path / "p.json"
    with pytest.raises(SystemExit) as caught:
        main(_build_args(_training_csv(tmp_path), out, "--top-k", value))
    assert caught.value.code == 2
    assert "argument --top-k:" in capsys.readouterr().err
    assert not out.exists()


def test_build_accepts_top_k_at_the_cap(tmp_path: Path) -> None:
    """--top-k 1000, the cap itself, builds a loadable profile."""
    out = tmp_path / "p.json"
    assert main(_build_args(_training_csv(tmp_path), out, "--top-k", "1000")) == 0
    assert load_profile(out).rows == 3_000


def test_build_reports_an_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output path in a missing directory exits 2 naming the path."""
    out = tmp_path / "missing" / "p.json"
    assert main(_build_args(_training_csv(tmp_path), out)) == 2
    assert str(out) in capsys.readouterr().err


def test_show_names_the_invalid_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`profile show` on a corrupted profile exits 2 naming the JSON path of the problem."""
    out = tmp_path / "p.json"
    assert main(_build_args(_training_csv(tmp_path), out, "--quiet")) == 0
    doc = orjson.loads(out.read_bytes())
    doc["features"][1]["other_share"] = -0.5
    out.write_bytes(orjson.dumps(doc))
    capsys.readouterr()
    assert main(["profile", "show", str(out)]) == 2
    err = capsys.readouterr().err
    assert "features[1].categories" in err
    assert str(out) in err


def test_missing_required_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Leaving out --model is rejected by argparse with exit status 2."""
    with pytest.raises(SystemExit) as caught:
        main(["profile", "build", "--data", "x.csv", "--version", "1", "-o", "p.json"])
    assert caught.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path: Path) -> None:
    """`python -m sidecar profile show` works as a process and exits 2 on a missing file."""
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "profile", "show", str(tmp_path / "absent.json")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "absent.json" in done.stderr


class _Terminal(io.StringIO):
    """A stderr that claims to be a terminal, so the progress bar is drawn."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("quiet", "drawn"), [(False, True), (True, False)])
def test_progress_bar_is_drawn_on_a_terminal_unless_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool, drawn: bool
) -> None:
    """On a terminal stderr shows both passes' progress; --quiet silences it."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    extra = ["--quiet"] if quiet else []
    assert main(_build_args(_training_csv(tmp_path), tmp_path / "p.json", *extra)) == 0
    drawn_text = terminal.getvalue()
    assert ("pass 2/2" in drawn_text) is drawn
    assert ("pass 1/2" in drawn_text) is drawn


HEAVY_MODULES = ("elasticsearch", "pyarrow", "scipy.stats")
"""About 80 MiB of resident memory together; a file-sink sidecar needs none of them."""

_SERVE_AND_SHIP = """
import json, os, signal, sys, threading, time, urllib.request
from pathlib import Path

from sidecar.cli import main

port, profile, folders = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
heavy = sys.argv[4].split(",")
seen = {}

def drive():
    body = json.dumps({"model": "m", "version": "1", "events": [
        {"id": "e1", "timestamp": "2026-01-01T00:00:00Z", "latency_seconds": 0.01,
         "features": {"x": 0.5}, "prediction": None}]}).encode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/events", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as answer:
                seen["status"] = answer.status
            break
        except OSError:
            time.sleep(0.05)
    while time.monotonic() < deadline and not any(
        path.stat().st_size for path in (folders / "predictions").glob("*.ndjson")
    ):
        time.sleep(0.05)
    seen["shipped"] = any(
        path.stat().st_size for path in (folders / "predictions").glob("*.ndjson"))
    seen["while serving"] = [m for m in heavy if m in sys.modules]
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=drive, daemon=True).start()
code = main(["serve", "--profile", profile, "--ingest-addr", f"127.0.0.1:{port}",
             "--metrics-addr", "127.0.0.1:0"])
seen["code"] = code
seen["after shutdown"] = [m for m in heavy if m in sys.modules]
print(json.dumps(seen))
"""


def test_serve_with_the_file_sink_never_imports_heavy_modules(tmp_path: Path) -> None:
    """Serving and shipping an event to NDJSON loads no ES client, pyarrow or scipy.stats."""
    rng = np.random.default_rng(6)
    profile = tmp_path / "m.json"
    dump_profile(make_profile("m", "1", {"x": rng.normal(size=200)}), profile)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELWATCH_")}
    env.update(dirs_environ(tmp_path))
    heavy = ",".join(HEAVY_MODULES)
    with socket.socket() as sock:  # a port free a moment ago: the child must know it up front
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_SHIP, str(port), str(profile), str(tmp_path), heavy],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = orjson.loads(result.stdout.splitlines()[-1])
    assert (seen.get("status"), seen["shipped"], seen["code"]) == (202, True, 0), result.stderr
    assert seen["while serving"] == []
    assert seen["after shutdown"] == []
