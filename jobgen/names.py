"""The strings Kubernetes and OCI accept, checked offline: object names (DNS-1035/1123), label keys
and values, annotation sizes, image references; plus sanitising and deterministic shortening.

Each ``*_problem`` function returns None for a valid value, else one line saying what was expected
(the rules of k8s.io/apimachinery/pkg/util/validation and of the OCI distribution reference grammar).
"""

from __future__ import annotations

import hashlib
import re

DNS1035_MAX = 63
# Longest name :func:`derived` makes: leaves 21 characters for the operator's -<role>-<index>
# ("-evaluator-" and a 10-digit index), so a derived job name is valid whatever the replica counts.
DERIVED_MAX = 42
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$")
# The OCI distribution reference grammar (github.com/distribution/reference, regexp.go).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$",
    re.ASCII,
)
IMAGE_NAME_MAX = 255
ANNOTATIONS_MAX_BYTES = 256 * 1024  # TotalAnnotationSizeLimitB
_HASH_LEN = 8


def is_dns1035(name: str, max_len: int = DNS1035_MAX) -> bool:
    """True if ``name`` is a DNS-1035 label (what the training-operator requires of job names)."""
    return 0 < len(name) <= max_len and _DNS1035.fullmatch(name) is not None


def is_dns1123_label(name: str) -> bool:
    """True if ``name`` is a DNS-1123 label (namespaces, Services)."""
    return 0 < len(name) <= DNS1035_MAX and _DNS1123_LABEL.fullmatch(name) is not None


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


def is_dns1123_subdomain(name: str) -> bool:
    """True if ``name`` is a DNS-1123 subdomain (most object names: PriorityClasses, hosts...)."""
    return 0 < len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name) is not None


def qualified_name_problem(key: str) -> str | None:
    """A label/annotation key or node-selector key: ``[prefix/]name``."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _QUALIFIED_PREFIX.fullmatch(prefix)):
        return f"{key!r} has an invalid prefix; expected a DNS-1123 subdomain before '/'"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"{key!r} is not a qualified name; expected [prefix/]name with a name of at most 63 characters "
            "[A-Za-z0-9-_.], starting and ending alphanumeric"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        return (
            f"{value!r} is not a valid label value; expected at most 63 characters [A-Za-z0-9-_.], "
            "starting and ending alphanumeric"
        )
    return None


def annotations_problem(annotations: dict[str, str]) -> str | None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        return f"annotations total {size} bytes; Kubernetes allows at most {ANNOTATIONS_MAX_BYTES}"
    return None


def image_problem(image: str) -> str | None:
    """An OCI image reference: ``[registry[:port]/]path[:tag][@algorithm:hex]``."""
    match = _IMAGE.fullmatch(image) if len(image) <= 1024 else None
    if match is None:
        return (
            f"{image!r} is not an image reference; expected [registry[:port]/]repository[:tag][@sha256:<hex>] "
            "with a lower-case repository path"
        )
    if len(match.group("name")) > IMAGE_NAME_MAX:
        return f"the image name of {image!r} is longer than {IMAGE_NAME_MAX} characters"
    return None


def host_problem(host: str) -> str | None:
    if _IPV4.fullmatch(host) or is_dns1123_subdomain(host):
        return None
    return f"{host!r} is not a host; expected a DNS-1123 subdomain or an IPv4 address"
