"""Which Bento serves a request for an alias or a version (packaging it first if needed)."""

from __future__ import annotations

import sys

from core.settings import MODEL_NAME, get_settings
from core.versions import CANDIDATE, CHAMPION, ModelRegistry, UnknownVersion, VersionRecord
from tasks.packaging import PackagingRefused, bentoml_home, local_bento, package_version


class ServingError(Exception):
    """Nothing servable: no such version or alias, or the version failed the gate."""


def resolve_version(registry: ModelRegistry, alias: str, version: str | None) -> VersionRecord:
    """The named version; else the alias; a missing champion falls back to the candidate, with a warning."""
    if version is not None:
        try:
            return registry.get(version)
        except UnknownVersion as exc:
            raise ServingError(str(exc)) from exc
    found = registry.by_alias(alias)
    if found is not None:
        return found
    if alias != CHAMPION:
        raise ServingError(f"no {MODEL_NAME} version has alias {alias!r}")
    found = registry.candidate()
    if found is None:
        raise ServingError(f"no {MODEL_NAME} version is registered yet: run `potable train`")
    print(f"warning: no champion yet; serving the {CANDIDATE} v{found.version}", file=sys.stderr)
    return found


def bento_for(alias: str, version: str | None) -> str:
    """The version's Bento in this store (rebuilt from the registry if packaged elsewhere); packaged now if
    it has none."""
    settings = get_settings()
    bentoml_home(settings)
    chosen = resolve_version(ModelRegistry(settings), alias, version)
    try:
        if chosen.bento_tag:
            return local_bento(chosen, settings, actor="cli")  # rebuilt here if packaged on another machine
        return package_version(chosen.version, settings, actor="cli").bento_tag
    except PackagingRefused as exc:
        raise ServingError(str(exc)) from exc
