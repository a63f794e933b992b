"""Parsing and validating GCS Pub/Sub notifications (payload JSON_API_V1) and retrain requests.

Everything here is pure: bytes + attributes in, an event or :class:`Rejected` out. A rejected
message goes to the dead-letter path; it never raises anything else.
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FINALIZE = "OBJECT_FINALIZE"
METADATA_UPDATE = "OBJECT_METADATA_UPDATE"
DELETE = "OBJECT_DELETE"
ARCHIVE = "OBJECT_ARCHIVE"
EVENT_TYPES = {FINALIZE, METADATA_UPDATE, DELETE, ARCHIVE}


class Rejected(Exception):
    """A message that can never be processed. ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ObjectEvent:
    """One GCS object change."""

    bucket: str
    name: str
    generation: int
    event_type: str
    metageneration: int = 1
    overwrote_generation: int | None = None
    event_time: str | None = None  # RFC 3339, from the notification
    size: int | None = None

    @property
    def event_timestamp(self) -> float | None:
        """``eventTime`` as POSIX seconds (None when absent or unreadable)."""
        return parse_time(self.event_time)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.bucket, self.name, self.generation)


@dataclass(frozen=True)
class RetrainRequest:
    job: str
    params: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


def parse_time(text: Any) -> float | None:
    """RFC 3339 → POSIX seconds, or None."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def check_object_name(name: str, max_bytes: int = 512, allow_unicode: bool = False) -> None:
    """Raise :class:`Rejected` for names that must never reach a job: traversal, control characters,
    non-ASCII (unless allowed), over-long names."""
    if not isinstance(name, str) or not name:
        raise Rejected("bad_object_name", "empty object name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise Rejected("bad_object_name", "object name is not valid UTF-8") from None
    if size > max_bytes:
        raise Rejected("bad_object_name", f"object name is {size} bytes; at most {max_bytes} are accepted")
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise Rejected("bad_object_name", f"object name has control or format characters: {name[:80]!r}")
    if not allow_unicode and not name.isascii():
        raise Rejected("bad_object_name", f"object name is not ASCII: {name[:80]!r}")
    if name.startswith("/") or "//" in name or any(seg in (".", "..") for seg in name.split("/")):
        raise Rejected("bad_object_name", f"object name has '.', '..' or empty path segments: {name[:80]!r}")
    if any(c in name for c in "\\"):
        raise Rejected("bad_object_name", f"object name has a backslash: {name[:80]!r}")


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise Rejected("bad_attribute", f"{what} is not an integer: {value!r}")
    try:
        number = int(str(value), 10)
    except (TypeError, ValueError):
        raise Rejected("bad_attribute", f"{what} is not an integer: {str(value)[:40]!r}") from None
    if number < 0 or number >= 2**63:
        raise Rejected("bad_attribute", f"{what} is out of range: {number}")
    return number


def parse_notification(
    data: bytes,
    attributes: Mapping[str, str],
    max_bytes: int = 65536,
    max_name_bytes: int = 512,
    allow_unicode: bool = False,
) -> ObjectEvent:
    """A GCS notification → :class:`ObjectEvent`; attributes are authoritative, the JSON payload must
    agree with them (bucket, name, generation). Raises only :class:`Rejected`, whatever the input."""
    try:
        return _parse_notification(data, attributes, max_bytes, max_name_bytes, allow_unicode)
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected("bad_message", f"unparseable notification ({type(exc).__name__})") from None


def _parse_notification(
    data: bytes, attributes: Mapping[str, str], max_bytes: int, max_name_bytes: int, allow_unicode: bool
) -> ObjectEvent:
    if not isinstance(data, (bytes, bytearray)):
        raise Rejected("bad_payload", f"payload is a {type(data).__name__}, not bytes")
    if len(data) > max_bytes:
        raise Rejected("too_large", f"payload is {len(data)} bytes; at most {max_bytes}")
    for attr in ("eventType", "bucketId", "objectId", "objectGeneration"):
        if not attributes.get(attr):
            raise Rejected("missing_attribute", f"attribute {attr} is missing")
    event_type = attributes["eventType"]
    if event_type not in EVENT_TYPES:
        raise Rejected("bad_event_type", f"unknown eventType {event_type[:40]!r}")
    fmt = attributes.get("payloadFormat", "JSON_API_V1")
    if fmt not in ("JSON_API_V1", "NONE"):
        raise Rejected("bad_payload_format", f"payloadFormat {fmt[:40]!r}; expected JSON_API_V1")
    bucket, name = attributes["bucketId"], attributes["objectId"]
    generation = _int(attributes["objectGeneration"], "objectGeneration")
    check_object_name(name, max_name_bytes, allow_unicode)
    meta = 1
    size = None
    if fmt == "JSON_API_V1":
        try:
            payload = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Rejected("bad_payload", "payload is not JSON") from None
        if not isinstance(payload, dict):
            raise Rejected("bad_payload", f"payload is a JSON {type(payload).__name__}, not an object")
        if payload.get("bucket") != bucket or payload.get("name") != name:
            raise Rejected("bad_payload", "payload bucket/name disagree with the attributes")
        if "generation" in payload and _int(payload["generation"], "generation") != generation:
            raise Rejected("bad_payload", "payload generation disagrees with objectGeneration")
        if "metageneration" in payload:
            meta = _int(payload["metageneration"], "metageneration")
        if "size" in payload:
            size = _int(payload["size"], "size")
    overwrote = attributes.get("overwroteGeneration")
    return ObjectEvent(
        bucket=bucket,
        name=name,
        generation=generation,
        event_type=event_type,
        metageneration=meta,
        overwrote_generation=_int(overwrote, "overwroteGeneration") if overwrote else None,
        event_time=attributes.get("eventTime"),
        size=size,
    )


def parse_request(data: bytes, max_bytes: int = 65536) -> RetrainRequest:
    """``{"job": "mnist", "params": {"lr": 0.01}, "id": "optional"}`` → :class:`RetrainRequest`.

    Params are checked against the job spec later (:meth:`Sensor.parse_retrain`, through
    ``jobgen.render.resolve_params``); here only the shape. Raises only :class:`Rejected`."""
    try:
        return _parse_request(data, max_bytes)
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected("bad_message", f"unparseable request ({type(exc).__name__})") from None


def _parse_request(data: bytes, max_bytes: int) -> RetrainRequest:
    if len(data) > max_bytes:
        raise Rejected("too_large", f"request is {len(data)} bytes; at most {max_bytes}")
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Rejected("bad_payload", f"request is not JSON: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise Rejected("bad_payload", "request must be a JSON object")
    unknown = set(doc) - {"job", "params", "id"}
    if unknown:
        raise Rejected("bad_request", f"unknown request keys: {', '.join(sorted(map(str, unknown)))[:120]}")
    job = doc.get("job")
    if not isinstance(job, str) or not job:
        raise Rejected("bad_request", "request.job must be a non-empty string")
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise Rejected("bad_request", "request.params must be an object")
    for key, value in params.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise Rejected("bad_param", "params keys must be strings of 1-64 characters")
        if value is None or isinstance(value, (dict, list)):
            raise Rejected("bad_param", f"params.{key[:40]} must be a scalar, got {type(value).__name__}")
    rid = doc.get("id")
    if rid is not None and (not isinstance(rid, str) or not 0 < len(rid) <= 128):
        raise Rejected("bad_request", "request.id must be a string of 1-128 characters")
    return RetrainRequest(job=job, params=params, request_id=rid)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
