"""Arrival detection: exactly one arrival per new object, none repeated after a restart (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import time

import boto3
import pytest

from potable import watcher
from potable.watcher import FolderSource, S3ListingSource, SqsNotificationSource, StateFile, take_baseline


@pytest.fixture
def state(tmp_path) -> StateFile:
    return StateFile(tmp_path / "state.json")


def _cycle(source) -> list[str]:
    arrivals = source.poll()
    source.acknowledge()
    return [a.uri for a in arrivals]


def test_s3_listing_announces_each_new_object_once_across_restarts(s3_bucket_name, moto_endpoint, state) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket_name, Key="incoming/old.csv", Body=b"a")
    s3.put_object(Bucket=s3_bucket_name, Key="elsewhere/x.csv", Body=b"a")
    first = S3ListingSource(s3, s3_bucket_name, "incoming/", state)
    assert first.first_run and take_baseline(first) == 1  # what was there before is not news
    s3.put_object(Bucket=s3_bucket_name, Key="incoming/a.csv", Body=b"a,b\n1,2\n")
    (arrival,) = first.poll()
    assert arrival.uri == f"s3://{s3_bucket_name}/incoming/a.csv" and arrival.size == 8 and arrival.etag
    first.acknowledge()
    assert _cycle(first) == []
    restarted = S3ListingSource(s3, s3_bucket_name, "incoming/", state)
    assert not restarted.first_run and _cycle(restarted) == []
    s3.put_object(Bucket=s3_bucket_name, Key="incoming/b.csv", Body=b"b")
    assert _cycle(restarted) == [f"s3://{s3_bucket_name}/incoming/b.csv"]


def test_unacknowledged_arrivals_come_back_after_a_crash(s3_bucket_name, moto_endpoint, state) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    take_baseline(S3ListingSource(s3, s3_bucket_name, "in/", state))
    s3.put_object(Bucket=s3_bucket_name, Key="in/a.csv", Body=b"a")
    assert len(S3ListingSource(s3, s3_bucket_name, "in/", state).poll()) == 1  # emitted, then crashed
    assert len(S3ListingSource(s3, s3_bucket_name, "in/", state).poll()) == 1  # so it is announced again


def test_sqs_notifications_are_announced_once_and_deleted(s3_bucket_name, moto_endpoint, state) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    queue = sqs.create_queue(QueueName=f"{s3_bucket_name}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=s3_bucket_name,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
                }
            ]
        },
    )
    source = SqsNotificationSource(sqs, queue, state, wait_seconds=1)
    s3.put_object(Bucket=s3_bucket_name, Key="incoming/new file.csv", Body=b"abc")
    arrivals = []
    for _ in range(5):
        arrivals += source.poll()
        source.acknowledge()
    assert [a.uri for a in arrivals] == [f"s3://{s3_bucket_name}/incoming/new file.csv"]
    assert arrivals[0].size == 3
    assert SqsNotificationSource(sqs, queue, state, wait_seconds=1).poll() == []


def test_a_redelivered_notification_is_not_announced_twice(state) -> None:
    record = {"eventName": "ObjectCreated:Put", "eventTime": "2026-11-26T10:00:00Z"}
    record["s3"] = {"bucket": {"name": "b"}, "object": {"key": "in/a.csv", "size": 3, "eTag": "e1"}}
    body = json.dumps({"Records": [record]})

    class Queue:
        deleted: list[str] = []

        def receive_message(self, **_):
            return {"Messages": [{"Body": body, "ReceiptHandle": "r"}]}

        def delete_message(self, QueueUrl, ReceiptHandle):  # noqa: N803 - boto3's names
            self.deleted.append(ReceiptHandle)

    queue = Queue()
    first = SqsNotificationSource(queue, "q", state)
    assert [a.uri for a in first.poll()] == ["s3://b/in/a.csv"]
    first.acknowledge()
    assert SqsNotificationSource(queue, "q", state).poll() == [] and queue.deleted == ["r"]


def test_s3_test_events_and_deletions_carry_no_arrival() -> None:
    assert SqsNotificationSource.parse(json.dumps({"Event": "s3:TestEvent"})) == []
    removed = {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}
    assert SqsNotificationSource.parse(json.dumps({"Records": [removed]})) == []


def test_landing_folder_waits_for_files_to_settle(tmp_path, state, monkeypatch) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    source = FolderSource(landing, state)
    take_baseline(source)
    fresh = landing / "batch.csv"
    fresh.write_text("a,b\n")
    assert source.poll() == []  # still being written, as far as the watcher can tell
    past = time.time() - 5
    os.utime(fresh, (past, past))
    (arrival,) = source.poll()
    assert arrival.uri == f"file://{fresh.resolve()}"
    source.acknowledge()
    assert _cycle(FolderSource(landing, state)) == []


def test_watch_emits_then_acknowledges(tmp_path, state, monkeypatch) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "early.csv").write_text("x")
    past = time.time() - 5
    os.utime(landing / "early.csv", (past, past))
    emitted: list[list[str]] = []
    monkeypatch.setattr(watcher, "emit_arrivals", lambda arrivals: emitted.append([a.uri for a in arrivals]))
    assert watcher.watch(FolderSource(landing, state), interval=0, once=True, backfill=True) == 1
    assert emitted == [[f"file://{(landing / 'early.csv').resolve()}"]]
    assert watcher.watch(FolderSource(landing, state), interval=0, once=True) == 0
