"""The event shapes `/job` reads, as OSCAR's faas-supervisor reads them, in its order."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ondrop.errors import InvalidKeyError
from ondrop.events import shapes

S3 = {
    "Records": [
        {
            "eventSource": "aws:s3",
            "eventTime": "2018-06-29T10:23:44Z",
            "s3": {"bucket": {"name": "images"}, "object": {"key": "in/dog+1.jpg"}},
        }
    ]
}
MINIO = {
    "Key": "images/in/cat.jpg",
    "EventName": "s3:ObjectCreated:Put",
    "Records": [
        {
            "eventSource": "minio:s3",
            "s3": {"bucket": {"name": "images"}, "object": {"key": "in/cat.jpg"}},
        }
    ],
}


def read(event: Any) -> shapes.Objects | shapes.Body | None:
    return shapes.read(json.dumps(event).encode())


def test_s3_and_minio_records_name_stored_objects() -> None:
    assert read(S3) == shapes.Objects(["images/in/dog 1.jpg"])
    assert read(MINIO) == shapes.Objects(["images/in/cat.jpg"])


def test_an_api_gateway_event_is_unwrapped_with_its_query_as_variables() -> None:
    flagged = {
        "httpMethod": "POST",
        "body": base64.b64encode(b"it works!").decode(),
        "isBase64Encoded": True,
        "queryStringParameters": {"q1": "v1", "Mode": "fast"},
    }
    assert read(flagged) == shapes.Body(
        b"it works!", exact=True, variables={"CONT_VAR_q1": "v1", "CONT_VAR_Mode": "fast"}
    )
    assert shapes.variables(json.dumps(flagged)) == {"CONT_VAR_q1": "v1", "CONT_VAR_Mode": "fast"}
    plain = {"httpMethod": "POST", "body": "aXQgd29ya3Mh", "isBase64Encoded": False}
    assert read(plain) == shapes.Body(b"aXQgd29ya3Mh", exact=True)  # not flagged: as it is
    # Its body is read again: a storage event inside starts jobs on the objects.
    assert read({"httpMethod": "POST", "body": json.dumps(MINIO)}) == shapes.Objects(
        ["images/in/cat.jpg"]
    )
    assert read({"httpMethod": "GET"}) == shapes.Body(b"", exact=True)


def test_a_delegated_event_names_its_provider_for_the_inner_events_objects() -> None:
    delegated = {"storage_provider": "minio.cluster2", "event": json.dumps(MINIO)}
    assert read(delegated) == shapes.Objects(["images/in/cat.jpg"], "minio.cluster2")
    assert read({"event": MINIO}) == shapes.Objects(["images/in/cat.jpg"])
    # An inner event that is no storage event is the input: JSON as it is, text as base64.
    assert read({"event": {"anything": 1}}) == shapes.Body(b'{"anything": 1}', exact=True)
    assert read({"event": "aGVsbG8="}) == shapes.Body(b"aGVsbG8=")


def test_a_dcache_event_names_a_file_in_the_input_on_webdav_dcache() -> None:
    event = {"event": {"name": "image2.jpg", "mask": ["IN_CREATE"]}, "subscription": "https://x"}
    assert read(event) == shapes.Objects(["image2.jpg"], "webdav.dcache", in_input=True)


@pytest.mark.parametrize(
    "event",
    [
        {"Records": []},
        {"Records": [{"eventSource": "narnia", "s3": {}}]},
        {"some": "json"},
        [1, 2],
    ],
)
def test_anything_else_is_not_an_event(event: Any) -> None:
    assert read(event) is None
    assert shapes.read(b"not json at all") is None


@pytest.mark.parametrize(
    ("event", "said"),
    [
        (
            {"Key": "/space", "Records": [{"objectKey": "f.txt", "eventSource": "OneTrigger"}]},
            "/space/folder/file",
        ),
        ({"Records": [{"objectKey": "f.txt", "eventSource": "OneTrigger"}]}, "in Key"),
        (
            {"Key": "/space/../x", "Records": [{"eventSource": "OneTrigger"}]},
            "OneTrigger event file path",
        ),
        ({"event_type": "close", "payload": {"scope": "user.jdoe", "name": "ds"}}, "Rucio"),
        ({"Records": [{"eventSource": "aws:s3", "s3": "x"}]}, "record 0"),
        ({"httpMethod": "POST", "body": "!!", "isBase64Encoded": True}, "not base64"),
        ({"httpMethod": "POST", "queryStringParameters": {"a b": "1"}}, "variable name"),
        ({"event": {"name": ""}, "subscription": "s"}, "event.name"),
        ({"storage_provider": 3, "event": "{}"}, "provider id"),
    ],
)
def test_an_event_that_cannot_work_says_why(event: dict[str, Any], said: str) -> None:
    with pytest.raises(InvalidKeyError, match=said):
        read(event)


def test_events_wrapped_too_deep_are_refused() -> None:
    event: dict[str, Any] = {"x": 1}
    for _ in range(20):
        event = {"event": event}
    with pytest.raises(InvalidKeyError, match="wrapped in more than"):
        read(event)


def test_a_onetrigger_event_names_a_path_in_a_space() -> None:
    event = {
        "Key": "/my-space/files/in/f.txt",
        "Records": [{"objectKey": "f.txt", "objectId": "00a1", "eventSource": "OneTrigger"}],
    }
    assert read(event) == shapes.Objects(["files/in/f.txt"], space="my-space")
