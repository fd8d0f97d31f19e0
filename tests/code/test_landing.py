"""The landing-area boundary (core/landing.py): what an arrival event may name."""

from __future__ import annotations

import pytest

from core.landing import in_landing_area, inside, landing_areas
from core.settings import Settings


@pytest.mark.parametrize(
    ("uri", "area", "expected"),
    [
        ("s3://landing/incoming/a.csv", "s3://landing/incoming/", True),
        ("s3://landing/incoming/deep/a.csv", "s3://landing/incoming", True),
        ("s3://landing/incomingX/a.csv", "s3://landing/incoming", False),  # a prefix is a folder, not a string
        ("s3://landing/incoming/../private/a.csv", "s3://landing/incoming/", False),
        ("s3://other/incoming/a.csv", "s3://landing/incoming/", False),
        ("s3://landing/", "s3://landing/", False),  # no object named
        ("/srv/landing/a.csv", "s3://landing/incoming/", False),
        ("s3://landing/incoming/a.csv", "/srv/landing", False),
        ("https://example.org/a.csv", "/srv/landing", False),
    ],
)
def test_what_lies_inside_an_area(uri: str, area: str, expected: bool) -> None:
    assert inside(uri, area) is expected


def test_folders_compare_resolved_paths_so_neither_dots_nor_symlinks_lead_out(tmp_path) -> None:
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    landing.mkdir(), outside.mkdir()
    (outside / "secret.csv").write_text("x")
    (landing / "link.csv").symlink_to(outside / "secret.csv")
    assert inside(str(landing / "a.csv"), str(landing)) and inside(f"file://{landing}/a.csv", str(landing))
    assert not inside(str(landing / ".." / "outside" / "secret.csv"), str(landing))
    assert not inside(str(landing / "link.csv"), str(landing))


def test_areas_are_the_watch_setting_plus_the_listed_ones(potable_home, monkeypatch) -> None:
    monkeypatch.setenv("POTABLE_LANDING_AREAS", "s3://second/in/, /srv/drop")
    settings = Settings()
    assert landing_areas(settings) == [str(settings.home_dir / "landing"), "s3://second/in/", "/srv/drop"]
    assert in_landing_area(str(settings.home_dir / "landing" / "a.csv"), settings)
    assert in_landing_area("s3://second/in/a.csv", settings) and not in_landing_area("/etc/passwd", settings)
    monkeypatch.setenv("POTABLE_WATCH", "https://sqs.us-east-1.amazonaws.com/1/queue")  # a queue is not an area
    assert landing_areas(Settings()) == ["s3://second/in/", "/srv/drop"]
