"""The Bento's requirements are the exact versions installed here: the ones the model was checked with."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from tasks.packaging import PackagingRefused, installed_closure


def test_the_closure_pins_every_dependency_to_the_installed_version() -> None:
    pins = dict(line.split("==") for line in installed_closure(["scikit-learn"]))
    # scikit-learn's own requirements come along, at the versions this environment has
    for name in ("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"):
        assert pins[name] == version(name)


def test_environment_markers_are_evaluated_as_pip_would() -> None:
    plain = {line.split("==")[0] for line in installed_closure(["bentoml"])}
    assert "uvicorn" in plain
    assert not any(name.startswith("pywin32") for name in plain)  # windows-only markers are skipped


def test_a_package_that_is_not_installed_is_refused_by_name() -> None:
    with pytest.raises(PackagingRefused, match="no-such-package-xyz"):
        installed_closure(["no-such-package-xyz"])
