"""Kubernetes object names: DNS-1035/1123 checks, sanitising and deterministic shortening."""

from __future__ import annotations

import hashlib
import re

DNS1035_MAX = 63
# Longest name :func:`derived` makes: leaves 21 characters for the operator's -<role>-<index>
# ("-evaluator-" and a 10-digit index), so a derived job name is valid whatever the replica counts.
DERIVED_MAX = 42
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HASH_LEN = 8


def is_dns1035(name: str, max_len: int = DNS1035_MAX) -> bool:
    """True if ``name`` is a DNS-1035 label (what the training-operator requires of job names)."""
    return 0 < len(name) <= max_len and _DNS1035.match(name) is not None


def is_dns1123_label(name: str) -> bool:
    """True if ``name`` is a DNS-1123 label (namespaces, Services)."""
    return 0 < len(name) <= DNS1035_MAX and _DNS1123_LABEL.match(name) is not None


def child_suffix_len(role: str, max_index: int) -> int:
    """Length of ``-<role>-<index>``, the suffix the operator appends for pods and Services."""
    return len(role) + len(str(max(max_index, 0))) + 2


def max_job_name_len(roles: dict[str, int]) -> int:
    """Longest job name whose every child ``<job>-<role>-<n>`` stays within 63 characters.

    ``roles`` maps the lower-cased replica type to its largest replica count.
    """
    if not roles:
        return DNS1035_MAX
    return DNS1035_MAX - max(child_suffix_len(r, n - 1) for r, n in roles.items())


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def sanitize(raw: str, max_len: int = DNS1035_MAX) -> str:
    """Turn any string into a valid DNS-1035 label of at most ``max_len`` characters.

    Valid names that fit are returned unchanged. Anything else is lower-cased, runs of invalid
    characters become ``-``, and a short hash of the *original* string is appended whenever
    information was lost, so different inputs keep different names.
    """
    if max_len < _HASH_LEN + 2:
        raise ValueError(f"max_len must be at least {_HASH_LEN + 2}, got {max_len}")
    if is_dns1035(raw, max_len):
        return raw
    cleaned = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    cleaned = cleaned.lstrip("0123456789-")
    return shorten(cleaned or "x", max_len, salt=raw)


def shorten(name: str, max_len: int, salt: str | None = None) -> str:
    """Shorten ``name`` to ``max_len`` by keeping a prefix and appending ``-<hash>``.

    The hash covers ``salt`` (default: ``name``), so the result is deterministic and two inputs
    that share a long prefix still get different names.
    """
    if len(name) <= max_len and salt is None:
        return name
    digest = _digest(salt if salt is not None else name)
    keep = max_len - _HASH_LEN - 1
    prefix = name[:keep].rstrip("-")
    if not prefix or not prefix[0].isalpha():
        prefix = ("j" + prefix)[:keep].rstrip("-")
    return f"{prefix}-{digest}"


def derived(base: str, key: str, max_len: int = DERIVED_MAX) -> str:
    """``<base>-<hash of key>``: the name of an object made *for* ``key`` (a data version, a pipeline
    run, a sweep's trials), a pure function of (base, key) that is a valid DNS-1035 label.

    The hash covers ``key`` and ``base`` in full, so shortening ``base`` never merges two keys and
    replica counts or other settings never change the name."""
    return shorten(sanitize(base, max_len) if base else "x", max_len, salt=f"{base}\x00{key}")
