"""The landing area(s): where data arrives — the only places an arrival event may name, and the only
places quarantine may move a file out of.

An `s3.object.created` event can be posted by anyone who reaches the Prefect API; without this check it
could make a worker read (and, on a failed validation, move) any file or object its credentials reach.
A path a person types (`potable train --data`, `potable validate`) may be anywhere, and is only read.
"""

from __future__ import annotations

from pathlib import Path

from core.batches import s3_parts
from core.settings import Settings


def landing_areas(settings: Settings) -> list[str]:
    """POTABLE_WATCH (default <home>/landing) plus POTABLE_LANDING_AREAS; an SQS queue URL is not an area."""
    areas = [settings.landing, *(a.strip() for a in (settings.landing_areas or "").split(",") if a.strip())]
    return [a for a in areas if not a.startswith(("http://", "https://"))]


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser().resolve()  # resolved: a symlink cannot lead out


def inside(uri: str, area: str) -> bool:
    if area.startswith("s3://"):
        if not uri.startswith("s3://"):
            return False
        (bucket, key), (area_bucket, prefix) = s3_parts(uri), s3_parts(area)
        prefix = prefix if not prefix or prefix.endswith("/") else f"{prefix}/"
        return bucket == area_bucket and bool(key) and key.startswith(prefix) and ".." not in key.split("/")
    if uri.startswith("s3://") or "://" in uri.removeprefix("file://"):
        return False
    return _local(uri).is_relative_to(_local(area))


def in_landing_area(uri: str, settings: Settings) -> bool:
    return any(inside(uri, area) for area in landing_areas(settings))
