"""Where reports live for everyone: drift reports, model cards and Data Docs on S3 when POTABLE_REPORTS_URI
says so. Workers on several machines share no disk: a report left on one worker's disk is invisible to the
others and gone with the worker. The local copy under POTABLE_HOME/reports is written either way."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from core.batches import s3_parts
from core.settings import Settings
from tasks.data import s3_bucket


def keep_report(path: Path, settings: Settings) -> str:
    """Upload `path` (a file, or a folder such as Data Docs) under POTABLE_REPORTS_URI, at its place below the
    reports folder, and return its S3 URI; without the setting, the local path."""
    if not settings.reports_uri:
        return str(path)
    bucket_name, prefix = s3_parts(settings.reports_uri)
    prefix = prefix.strip("/")
    relative = path.resolve().relative_to(settings.reports_dir.resolve()).as_posix()
    key = f"{prefix}/{relative}" if prefix else relative
    bucket = s3_bucket(bucket_name, settings)
    if path.is_dir():
        bucket.upload_from_folder(str(path), to_folder=key)
    else:
        bucket.upload_from_path(str(path), key)
    return f"s3://{bucket_name}/{key}"


def report_url(path: Path, settings: Settings) -> str:
    """Where a browser opens `path` (a file below the reports folder): the reports server `potable up`
    starts (loopback, read-only); a path outside the reports folder is returned as it is."""
    try:
        relative = path.resolve().relative_to(settings.reports_dir.resolve()).as_posix()
    except ValueError:
        return str(path)
    return f"http://127.0.0.1:{settings.reports_port}/{quote(relative)}"


def report_links(path: Path, settings: Settings, kept: str | None = None) -> str:
    """Markdown for an artifact: a link that opens the report, and where the file is kept."""
    kept = kept or str(path)
    return f"[open]({report_url(path, settings)}) (kept at `{kept}`; served while `potable up` runs)"
