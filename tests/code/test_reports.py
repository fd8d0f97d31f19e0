"""Reports kept on S3 (POTABLE_REPORTS_URI) for workers that share no disk; moto in server mode."""

from __future__ import annotations

import boto3
import pytest
from pydantic import ValidationError

from core.settings import Settings
from tasks.reports import keep_report


def test_files_and_folders_land_under_the_prefix(s3_bucket_name, settings, monkeypatch) -> None:
    monkeypatch.setenv("POTABLE_REPORTS_URI", f"s3://{s3_bucket_name}/team/reports/")
    settings = Settings()
    settings.ensure_dirs()
    report = settings.reports_dir / "drift-20261128T000000Z.html"
    report.write_text("<html>drift</html>")
    docs = settings.reports_dir / "data_docs" / "20261128T000000Z-abc"
    (docs / "validations").mkdir(parents=True)
    (docs / "index.html").write_text("<html>docs</html>")
    (docs / "validations" / "run.html").write_text("<html>run</html>")
    assert keep_report(report, settings) == f"s3://{s3_bucket_name}/team/reports/drift-20261128T000000Z.html"
    assert keep_report(docs, settings) == f"s3://{s3_bucket_name}/team/reports/data_docs/20261128T000000Z-abc"
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket_name)["Contents"]}
    assert keys == {
        "team/reports/drift-20261128T000000Z.html",
        "team/reports/data_docs/20261128T000000Z-abc/index.html",
        "team/reports/data_docs/20261128T000000Z-abc/validations/run.html",
    }
    body = s3.get_object(Bucket=s3_bucket_name, Key="team/reports/drift-20261128T000000Z.html")["Body"].read()
    assert body == b"<html>drift</html>"


def test_without_the_setting_the_local_path_is_the_report(settings) -> None:
    report = settings.reports_dir / "drift.html"
    report.write_text("x")
    assert keep_report(report, settings) == str(report)


@pytest.mark.parametrize("bad", ["http://bucket/reports", "s3://", "/tmp/reports", "s3://UPPER/x"])
def test_a_reports_uri_that_is_no_s3_prefix_is_refused(bad, monkeypatch) -> None:
    monkeypatch.setenv("POTABLE_REPORTS_URI", bad)
    with pytest.raises(ValidationError, match="reports_uri"):
        Settings()
