"""Prefect tasks for validating a batch (core/expectations.py) and quarantining a rejected one."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.batches import Batch, split_s3_uri
from core.expectations import ValidationReport, validate_batch
from core.landing import in_landing_area
from core.settings import Settings
from tasks.data import s3_bucket
from tasks.reports import keep_report, report_links

__all__ = ["ValidationReport", "validate_batch", "quarantine_batch", "validate_batch_task", "quarantine_batch_task"]


@dataclass(frozen=True)
class Quarantined:
    where: str
    moved: bool  # False: a copy; the original is not ours to move (it is outside the landing area)

    def __str__(self) -> str:
        return f"batch moved to {self.where}" if self.moved else f"copy kept in {self.where} (original left in place)"


def quarantine_batch(batch: Batch, report: ValidationReport, settings: Settings) -> Quarantined:
    """Take a rejected batch out of the landing area, with a reason file. A batch from anywhere else (a path
    a person named) is copied into quarantine and left where it is: nothing outside POTABLE_HOME and the
    landing area is ever moved or deleted."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    reason = {
        "source": batch.uri,
        "sha256": batch.sha256,
        "quarantined_at": stamp,
        "failures": report.failures,
        "data_docs": str(report.data_docs) if report.data_docs else None,
    }
    landed = in_landing_area(batch.uri, settings)
    if batch.is_s3 and landed:
        bucket_name, key = split_s3_uri(batch.uri)
        bucket = s3_bucket(bucket_name, settings)
        target_key = f"{settings.quarantine_prefix.rstrip('/')}/{stamp}/{key}"
        bucket.upload_from_file_object(_json_bytes(reason), f"{target_key}.reason.json")
        bucket.move_object(key, target_key)
        return Quarantined(f"s3://{bucket_name}/{target_key}", moved=True)
    target_dir = settings.quarantine_dir / f"{stamp}-{batch.sha256[:12]}"
    target_dir.mkdir(parents=True, exist_ok=True)
    (target_dir / "reason.json").write_text(json.dumps(reason, indent=2), encoding="utf-8")
    target = target_dir / batch.path.name
    if landed or batch.is_s3:  # an S3 batch outside the landing area: only our downloaded copy moves
        shutil.move(str(batch.path), target)
    else:
        shutil.copyfile(batch.path, target)
    return Quarantined(str(target), moved=landed)


def _json_bytes(payload: dict[str, Any]):
    import io

    return io.BytesIO(json.dumps(payload, indent=2).encode("utf-8"))


@task(name="validate-batch", cache_policy=NO_CACHE)
def validate_batch_task(batch: Batch, settings: Settings) -> ValidationReport:
    report = validate_batch(batch, settings)
    docs = "none (the batch could not be read)"
    if report.data_docs:
        kept = keep_report(report.data_docs.parent, settings)
        # The batch's own result page; the site's index lists the suite and this result.
        page = next(iter(sorted((report.data_docs.parent / "validations").rglob("*.html"))), report.data_docs)
        docs = report_links(page, settings, kept)
    lines = "\n".join(f"- {line}" for line in report.failures) or "- all expectations met"
    create_markdown_artifact(
        key="batch-validation",
        markdown=f"## Batch validation: {'passed' if report.success else 'FAILED'}\n\n"
        f"Source `{batch.uri}` (sha256 `{batch.sha256[:12]}`), {report.rows} rows\n\n{lines}\n\n"
        f"Data Docs: {docs}",
        description="Great Expectations result for the incoming batch",
    )
    return report


@task(name="quarantine-batch", cache_policy=NO_CACHE)
def quarantine_batch_task(batch: Batch, report: ValidationReport, settings: Settings) -> Quarantined:
    quarantined = quarantine_batch(batch, report, settings)
    # The validation artifact names the batch where it landed; this one says where it is now.
    create_markdown_artifact(
        key="batch-quarantine",
        markdown=f"## Batch quarantined\n\n`{batch.uri}`: {quarantined} (the reasons in `reason.json` beside it)."
        "\n\nFix the batch and drop it into the landing area again; nothing of it was appended or trained on.",
        description="Where the refused batch is now",
    )
    return quarantined
