"""The images at run time, without a Docker engine: health checks and installed dependencies.

The health check each Dockerfile declares is run against the real ``python -m serving`` and
``python -m sidecar serve`` (started with the image's environment on free ports): it must pass
while the server is up and fail once it is gone. The dependency check holds the images' pip
extras to what their entry points import.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from serving.settings import ServingSettings
from sidecar.profile import dump_profile
from sidecar.settings import Settings
from tests.deploy._dockerfile import ROOT, image_of
from tests.support.onnx_models import build_classifier
from tests.support.profiles import make_profile

SERVING_IMAGES = ("serving", "serving-gpu")
PROJECT_PACKAGES = {"sidecar", "serving"}
DEADLINE = 30.0


# --------------------------------------------------------------------------- health check


def _healthcheck(image: str) -> tuple[str, str]:
    """The health check's Python snippet and the URL it calls."""
    check = image_of(image).last("HEALTHCHECK")
    assert check is not None
    exec_form = check.text.split(" ", 1)
    assert exec_form[0] == "CMD"
    words = orjson.loads(exec_form[1])
    assert words[:2] == ["python", "-c"], words
    code = words[2]
    compile(code, "HEALTHCHECK", "exec")
    (url,) = re.findall(r"'(http://[^']+)'", code)
    return code, url


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELWATCH_")}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env={**base, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _listening(process: subprocess.Popen[bytes], log: Path, key: str) -> int:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            record = orjson.loads(line) if line.startswith("{") else {}
            if record.get("message") == "listening":
                return int(record[key])
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError("no 'listening' line: " + log.read_text())


def _probe(code: str, url: str, port: int) -> int:
    """Run the health check snippet with its URL pointed at ``port``; its exit status."""
    parts = urlsplit(url)
    moved = code.replace(url, parts._replace(netloc=f"{parts.hostname}:{port}").geturl())
    result = subprocess.run(
        [sys.executable, "-c", moved], capture_output=True, timeout=DEADLINE, check=False
    )
    return result.returncode


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(DEADLINE)


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A real ``python -m serving`` on a free port, with a small classifier."""
    build_classifier(tmp_path / "model")
    env = {
        **image_of("serving").key_values("ENV"),
        "MODELWATCH_MODEL_URI": str(tmp_path / "model"),
        "MODELWATCH_SERVING_ADDR": "127.0.0.1:0",
        "MODELWATCH_SIDECAR_URL": "http://127.0.0.1:9",
    }
    log = tmp_path / "serving.log"
    process = _start(["-m", "serving"], env, log)
    try:
        yield process, _listening(process, log, "port")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A real ``python -m sidecar serve`` on free ports, with spool and logs under tmp_path."""
    profile = tmp_path / "profile.json"
    dump_profile(make_profile(numeric={"x": np.arange(200, dtype=np.float64)}), profile)
    env = {
        **image_of("sidecar").key_values("ENV"),
        "MODELWATCH_PROFILES": str(profile),
        "MODELWATCH_INGEST_ADDR": "127.0.0.1:0",
        "MODELWATCH_METRICS_ADDR": "127.0.0.1:0",
        "MODELWATCH_SPOOL_DIR": str(tmp_path / "spool"),
        "MODELWATCH_LOG_DIR": str(tmp_path / "spool" / "predictions"),
    }
    log = tmp_path / "sidecar.log"
    process = _start(["-m", "sidecar", "serve"], env, log)
    try:
        yield process, _listening(process, log, "ingest_port")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)


@pytest.mark.parametrize("image", SERVING_IMAGES)
def test_model_server_health_check_passes_then_fails(
    image: str, model_server: tuple[subprocess.Popen[bytes], int]
) -> None:
    """The serving health check targets the image's port and /healthz; 0 when up, not once down."""
    code, url = _healthcheck(image)
    settings = ServingSettings.from_environ(image_of(image).key_values("ENV"))
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == (
        "127.0.0.1",
        settings.serving_addr.port,
        "/healthz",
    )
    process, port = model_server
    assert _probe(code, url, port) == 0
    _stop(process)
    assert _probe(code, url, port) != 0


def test_sidecar_health_check_passes_then_fails(
    sidecar: tuple[subprocess.Popen[bytes], int],
) -> None:
    """The sidecar health check targets the ingest port and /healthz; 0 when up, not once down."""
    code, url = _healthcheck("sidecar")
    env = image_of("sidecar").key_values("ENV")
    settings = Settings.from_sources({**env, "MODELWATCH_PROFILES": "/etc/p.json"})
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == (
        "127.0.0.1",
        settings.ingest_addr.port,
        "/healthz",
    )
    process, port = sidecar
    assert _probe(code, url, port) == 0
    _stop(process)
    assert _probe(code, url, port) != 0


# --------------------------------------------------------------------------- dependencies


def _extra_closure(project: dict[str, Any], extra: str) -> set[str]:
    """Distributions ``pip install modelwatch[extra]`` installs.

    The project's own requirements come from ``pyproject.toml`` (``project``, its ``[project]``
    table), so an edit counts before any reinstall; their dependencies from installed metadata.
    """
    names: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    own = [*project.get("dependencies", []), *project["optional-dependencies"][extra]]
    todo = [(r.name, frozenset(r.extras)) for r in map(Requirement, own)]
    while todo:
        name, extras = todo.pop()
        if (key := (canonicalize_name(name), extras)) in seen:
            continue
        seen.add(key)
        names.add(key[0])
        environments = [{"extra": ""}, *({"extra": e} for e in extras)]
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return names


def _module_imports(module: str) -> set[str]:
    """Modules imported at module level by ``module`` (``if TYPE_CHECKING:`` blocks left out)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    found: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue  # imported when called: optional paths (the Elasticsearch client …)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _third_party(entries: tuple[str, ...]) -> set[str]:
    """Distributions the project modules reachable from ``entries`` import at module level."""
    owners = metadata.packages_distributions()
    seen: set[str] = set()
    todo = list(entries)
    distributions: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _module_imports(module):
            top = name.split(".")[0]
            if top in PROJECT_PACKAGES:
                source = ROOT / name.replace(".", "/")
                if source.with_suffix(".py").is_file() or (source / "__init__.py").is_file():
                    todo.append(name)
            elif top not in sys.stdlib_module_names:
                assert top in owners, f"{module} imports {name}, which no distribution provides"
                distributions.update(canonicalize_name(d) for d in owners[top])
    return distributions


@pytest.mark.parametrize(
    ("extra", "entries"),
    [("serving", ("serving.__main__",)), ("sidecar", ("sidecar.__main__", "sidecar.server"))],
)
def test_entry_points_need_only_their_extra(extra: str, entries: tuple[str, ...]) -> None:
    """What ``python -m serving`` / ``sidecar serve`` import at module level, the extra installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    missing = _third_party(entries) - _extra_closure(project, extra) - {"modelwatch"}
    assert not missing, f"the {extra} image lacks {sorted(missing)}: add them to the extra"
