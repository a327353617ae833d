"""Fixtures shared by the Kubernetes manifest tests (``test_k8s_*.py``).

Each of those modules marks itself with ``pytestmark = pytest.mark.usefixtures(
"kubectl_with_kustomize_v5")``, so every test in it fails loudly, with the install hint, when
kubectl or its kustomize is missing or too old; the image and Compose tests do not need it.
"""

from __future__ import annotations

import pytest

from tests.deploy._k8s import (
    Doc,
    rendered_targets,
    require_kubectl_with_kustomize_v5,
    target_objects,
)


@pytest.fixture(scope="session")
def kubectl_with_kustomize_v5() -> None:
    """Fail the test loudly, with the install hint, without a usable kubectl."""
    require_kubectl_with_kustomize_v5()


@pytest.fixture(scope="session")
def rendered(kubectl_with_kustomize_v5: None) -> dict[str, str]:
    """Each target (base, overlays, components) rendered once with ``kubectl kustomize``."""
    return rendered_targets()


@pytest.fixture(scope="session")
def objects(kubectl_with_kustomize_v5: None) -> dict[str, list[Doc]]:
    """Each target's rendered objects."""
    return target_objects()
