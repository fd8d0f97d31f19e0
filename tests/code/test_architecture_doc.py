"""docs/architecture.md lists every module of ours by layer: a module missing there is a module a newcomer
cannot place. Each table row names its package once (`tasks/data.py`, then `validation.py`, …)."""

from __future__ import annotations

import re

from core.settings import PROJECT_ROOT

PACKAGES = ("core", "tasks", "flows", "governance", "deployments", "potable", "bentos")


def documented_modules() -> set[str]:
    found: set[str] = set()
    for line in (PROJECT_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        names = re.findall(r"`([^`]+)`", line)
        package = next((n.rsplit("/", 1)[0] for n in names if "/" in n and n.split("/")[0] in PACKAGES), None)
        if package is None:
            continue
        for name in names:
            if name.endswith(".py"):
                found.add(name if "/" in name else f"{package}/{name}")
    return found


def test_every_module_is_placed_in_docs_architecture() -> None:
    modules = {
        path.relative_to(PROJECT_ROOT).as_posix()
        for package in PACKAGES
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    missing = sorted(modules - documented_modules())
    assert not missing, f"not listed in docs/architecture.md: {missing}"
    assert not sorted(documented_modules() - modules), "docs/architecture.md lists modules that do not exist"
