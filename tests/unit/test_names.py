"""Name sanitising and shortening (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jobgen.names import child_suffix_len, is_dns1035, max_job_name_len, sanitize, shorten

any_text = st.text(max_size=300)
limits = st.integers(min_value=10, max_value=63)


@settings(max_examples=500)
@given(raw=any_text, limit=limits)
def test_sanitize_always_valid_and_bounded(raw, limit):
    name = sanitize(raw, limit)
    assert is_dns1035(name, limit), name
    assert len(name) <= limit


@settings(max_examples=300)
@given(raw=any_text, limit=limits)
def test_sanitize_is_deterministic(raw, limit):
    assert sanitize(raw, limit) == sanitize(raw, limit)


@settings(max_examples=300)
@given(name=st.from_regex(r"[a-z]([-a-z0-9]{0,40}[a-z0-9])?", fullmatch=True))
def test_valid_names_are_kept(name):
    assert sanitize(name, 63) == name


@settings(max_examples=300)
@given(a=any_text, b=any_text, limit=limits)
def test_different_inputs_rarely_collide(a, b, limit):
    # Whenever sanitising lost information, a hash of the original keeps names apart.
    if a != b and sanitize(a, limit) == sanitize(b, limit):
        assert is_dns1035(a, limit) and a == b  # unreachable: only identical valid names map together


@given(prefix=st.from_regex(r"[a-z][a-z0-9]{60,80}", fullmatch=True), limit=limits)
def test_shorten_keeps_prefix_and_separates_suffixes(prefix, limit):
    one, two = shorten(prefix + "-one", limit), shorten(prefix + "-two", limit)
    assert len(one) <= limit and len(two) <= limit and one != two
    assert is_dns1035(one, limit) and is_dns1035(two, limit)


def test_examples():
    assert sanitize("My_Job.v2").startswith("my-job-v2-")
    assert sanitize("123abc").startswith("abc-")
    assert sanitize("___").startswith("x-")
    assert child_suffix_len("worker", 9) == len("-worker-9")
    assert max_job_name_len({"master": 1, "worker": 100}) == 63 - len("-worker-99")
