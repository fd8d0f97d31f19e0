"""Data arrival → one Prefect event `s3.object.created` per new object, never repeated after a restart.

Sources (one per watcher process):
- S3 event notifications delivered to SQS (production): long-polled; a message is deleted only after its
  events were sent, and recently sent object versions are remembered so a redelivery emits nothing.
- ListObjectsV2 polling (any S3-compatible store): a persisted high-water mark of LastModified plus the
  keys seen at that instant.
- A local landing folder (default): `file://` resource ids, same event type, same mark.
State is a small JSON file written atomically after the events were flushed to the Prefect API.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_plus

from core.batches import split_s3_uri
from core.files import save_json_atomically
from core.settings import Settings

ARRIVAL_EVENT = "s3.object.created"
SETTLE_SECONDS = 1.0  # a local file younger than this may still be being written
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arrival:
    uri: str
    size: int
    etag: str
    modified: str  # ISO 8601, UTC


class Source(Protocol):
    first_run: bool  # no saved state yet: what is already there is the baseline, not news

    def poll(self) -> list[Arrival]: ...
    def acknowledge(self) -> None: ...


class StateFile:
    """JSON state, replaced atomically so a crash leaves the old or the new state, never half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}

    def save(self, state: dict[str, Any]) -> None:
        save_json_atomically(self.path, state, sort_keys=True)


class HighWaterMark:
    """New = not seen and modified after (mark - lookback). Keys inside the lookback are remembered.

    The lookback covers a listing that shows an object later than a newer one (uploads finishing out
    of order); older keys are forgotten, so the state stays small.
    """

    LOOKBACK = timedelta(seconds=120)

    def __init__(self, state: StateFile) -> None:
        self.state = state
        saved = state.load()
        self.mark: str = saved.get("mark", "")
        self.recent: dict[str, str] = saved.get("recent", {})
        self._pending: list[Arrival] = []

    def _floor(self) -> str:
        return _iso(datetime.fromisoformat(self.mark) - self.LOOKBACK) if self.mark else ""

    def new(self, candidates: list[Arrival]) -> list[Arrival]:
        floor = self._floor()
        fresh = [a for a in candidates if a.modified > floor and a.uri not in self.recent]
        return sorted(fresh, key=lambda a: (a.modified, a.uri))

    def advance(self, emitted: list[Arrival]) -> None:
        for arrival in emitted:
            self.recent[arrival.uri] = arrival.modified
            self.mark = max(self.mark, arrival.modified)
        floor = self._floor()
        self.recent = {uri: modified for uri, modified in self.recent.items() if modified > floor}
        self.state.save({"mark": self.mark, "recent": self.recent})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class FolderSource:
    """A local landing folder: every settled *.csv file is an arrival."""

    def __init__(self, folder: Path, state: StateFile) -> None:
        self.folder = folder
        self.first_run = not state.path.is_file()
        self.mark = HighWaterMark(state)
        self._pending: list[Arrival] = []

    def poll(self) -> list[Arrival]:
        self.folder.mkdir(parents=True, exist_ok=True)
        now, found = time.time(), []
        for path in sorted(self.folder.glob("*.csv")):
            stat = path.stat()
            if now - stat.st_mtime >= SETTLE_SECONDS:
                modified = _iso(datetime.fromtimestamp(stat.st_mtime, UTC))
                found.append(Arrival(f"file://{path.resolve()}", stat.st_size, f"{stat.st_mtime_ns:x}", modified))
        self._pending = self.mark.new(found)
        return self._pending

    def acknowledge(self) -> None:
        self.mark.advance(self._pending)


class S3ListingSource:
    """ListObjectsV2 over a bucket prefix, for S3-compatible stores without event notifications."""

    def __init__(self, client, bucket: str, prefix: str, state: StateFile) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.first_run = not state.path.is_file()
        self.mark = HighWaterMark(state)
        self._pending: list[Arrival] = []

    def _objects(self) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            yield from page.get("Contents", [])

    def poll(self) -> list[Arrival]:
        found = [
            Arrival(f"s3://{self.bucket}/{o['Key']}", o["Size"], o["ETag"].strip('"'), _iso(o["LastModified"]))
            for o in self._objects()
            if not o["Key"].endswith("/")
        ]
        self._pending = self.mark.new(found)
        return self._pending

    def acknowledge(self) -> None:
        self.mark.advance(self._pending)


class SqsNotificationSource:
    """S3 event notifications (ObjectCreated:*) delivered to an SQS queue, long-polled."""

    REMEMBERED = 5000  # recently emitted object versions kept to drop redeliveries

    def __init__(self, client, queue_url: str, state: StateFile, wait_seconds: int = 20) -> None:
        self.client, self.queue_url, self.state, self.wait_seconds = client, queue_url, state, wait_seconds
        self.first_run = False  # queued notifications are news by definition
        self.emitted: list[str] = state.load().get("emitted", [])
        self._receipts: list[str] = []
        self._pending: list[Arrival] = []

    def poll(self) -> list[Arrival]:
        response = self.client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_seconds
        )
        messages = response.get("Messages", [])
        self._receipts = [m["ReceiptHandle"] for m in messages]
        arrivals = [a for m in messages for a in self.parse(m["Body"])]
        seen = set(self.emitted)
        self._pending = [a for a in arrivals if f"{a.uri}#{a.etag}" not in seen]
        return self._pending

    @staticmethod
    def parse(body: str) -> list[Arrival]:
        """S3 notification JSON (directly, or wrapped by SNS); test events and other kinds carry no arrival."""
        message = json.loads(body)
        if "Message" in message and "Records" not in message:
            message = json.loads(message["Message"])
        arrivals = []
        for record in message.get("Records", []):
            if not record.get("eventName", "").startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            key = unquote_plus(s3["object"]["key"])
            etag = s3["object"].get("eTag") or s3["object"].get("sequencer", "")
            uri = f"s3://{s3['bucket']['name']}/{key}"
            arrivals.append(Arrival(uri, int(s3["object"].get("size", 0)), etag, record.get("eventTime", "")))
        return arrivals

    def acknowledge(self) -> None:
        self.emitted = (self.emitted + [f"{a.uri}#{a.etag}" for a in self._pending])[-self.REMEMBERED :]
        self.state.save({"emitted": self.emitted})
        for receipt in self._receipts:
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)


def emit_arrivals(arrivals: list[Arrival]) -> None:
    """One `s3.object.created` per arrival, flushed to the Prefect API before the caller saves state."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    for arrival in arrivals:
        emit_event(
            ARRIVAL_EVENT,
            resource={"prefect.resource.id": arrival.uri, "prefect.resource.name": arrival.uri.rsplit("/", 1)[-1]},
            payload={"size": arrival.size, "etag": arrival.etag, "modified": arrival.modified},
        )
        logger.info("arrival: %s (%d bytes)", arrival.uri, arrival.size)
    if arrivals:
        EventsWorker.drain_all()


def state_path(settings: Settings) -> Path:
    """What the watcher has seen; written once it has taken its baseline (`potable up` waits for it)."""
    return settings.home_dir / "run" / "watcher-state.json"


def source_for(watch: str, settings: Settings) -> Source:
    """`s3://bucket/prefix` (listing), `sqs://…` / an https SQS queue URL (notifications), else a folder."""
    state = StateFile(state_path(settings))
    if watch.startswith("s3://"):
        import boto3

        bucket, prefix = split_s3_uri(watch if "/" in watch[5:] else f"{watch}/")
        client = boto3.client("s3", region_name=settings.aws_region, endpoint_url=settings.s3_endpoint_url)
        return S3ListingSource(client, bucket, prefix, state)
    if watch.startswith(("sqs://", "https://sqs.", "http://")):
        import boto3

        client = boto3.client("sqs", region_name=settings.aws_region, endpoint_url=settings.sqs_endpoint_url)
        return SqsNotificationSource(client, watch.replace("sqs://", "https://", 1), state)
    return FolderSource(Path(watch.removeprefix("file://")).expanduser(), state)


def take_baseline(source: Source) -> int:
    """First start: objects already there are recorded as seen, not announced (a bucket's history must
    not start a training run per file); `backfill` skips this."""
    existing = source.poll()
    source.acknowledge()
    logger.info("first start: %d existing object(s) taken as already processed", len(existing))
    return len(existing)


def watch(source: Source, interval: float, once: bool = False, backfill: bool = False) -> int:
    """Poll → emit → acknowledge, forever (or once); returns the number of events emitted."""
    total = 0
    if source.first_run and not backfill:
        take_baseline(source)
    while True:
        try:
            arrivals = source.poll()
            emit_arrivals(arrivals)
            source.acknowledge()
            total += len(arrivals)
        except Exception:  # a store or API hiccup must not kill a long-lived watcher: log and retry
            if once:
                raise
            logger.exception("watch cycle failed; retrying in %.0f s", interval)
        if once:
            return total
        time.sleep(interval)
