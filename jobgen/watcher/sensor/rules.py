"""The sensor's rules: which trigger an object event belongs to, and when a data version is complete.

Pure logic; no I/O.

- marker mode: the version is complete when one of ``markers`` lands directly in the version
  folder. The dedupe key is (bucket, version folder, 0): a second marker in the same folder is the
  same version. An overwritten marker (``overwriteGeneration`` set) is a new key only when the
  trigger's ``overwrites`` is ``retrain`` (then the key carries the new generation).
- debounce mode: the version is complete after ``quietSeconds`` without new objects in it
  (:mod:`jobgen.watcher.sensor.debounce` keeps that state durably); same key rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jobgen.watcher.config import Trigger
from jobgen.watcher.sensor.events import ARCHIVE, DELETE, FINALIZE, METADATA_UPDATE, ObjectEvent

_MAX_ALTERNATIVES = 256


class Glob:
    """A GCS matchGlob pattern (``*`` within a segment, ``**`` across, ``**/``, ``?``, ``[..]``, ``{a,b}``)
    matched by simulating its automaton: O(len(name) x len(pattern)) whatever the number of ``*``
    (a backtracking regex takes seconds on ``*a*a*a*a*b`` against a long name)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        alternatives = _expand_braces(pattern)
        if len(alternatives) > _MAX_ALTERNATIVES:
            raise ValueError(f"glob {pattern[:80]!r} expands to more than {_MAX_ALTERNATIVES} alternatives")
        self.programs = [_compile(a) for a in alternatives]

    def match(self, name: str) -> bool:
        return any(_run(prog, name) for prog in self.programs)


# Tokens: ("lit", c), ("any1",) = ?, ("set", neg, chars, ranges), ("star",) = *, ("dstar",) = **,
# ("dslash",) = **/ (empty, or anything ending in '/').
Token = tuple[Any, ...]


def _expand_braces(p: str) -> list[str]:
    start = p.find("{")
    if start == -1:
        return [p]
    depth = 0
    parts, last = [], start + 1
    for i in range(start, len(p)):
        c = p[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                parts.append(p[last:i])
                out: list[str] = []
                for part in parts:
                    for tail in _expand_braces(part + p[i + 1 :]):
                        out.append(p[:start] + tail)
                        if len(out) > _MAX_ALTERNATIVES:
                            return out
                return out
        elif c == "," and depth == 1:
            parts.append(p[last:i])
            last = i + 1
    return [p]  # unbalanced: literal


def _compile(p: str) -> list[Token]:
    toks: list[Token] = []
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            toks.append(("dslash",))
            i += 3
        elif p.startswith("**", i):
            toks.append(("dstar",))
            i += 2
        elif p[i] == "*":
            toks.append(("star",))
            i += 1
        elif p[i] == "?":
            toks.append(("any1",))
            i += 1
        elif p[i] == "[" and p.find("]", i + 2) != -1:
            end = p.find("]", i + 2)
            body = p[i + 1 : end]
            neg = body[:1] in ("!", "^")
            body = body[1:] if neg else body
            chars, ranges, j = set(), [], 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    ranges.append((body[j], body[j + 2]))
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            toks.append(("set", neg, frozenset(chars), tuple(ranges)))
            i = end + 1
        else:
            toks.append(("lit", p[i]))
            i += 1
    return toks


def _closure(prog: list[Token], states: set[tuple[int, bool]]) -> set[tuple[int, bool]]:
    """Epsilon closure: star/dstar/dslash may match nothing (a dslash only before it consumed)."""
    stack, seen = list(states), set(states)
    while stack:
        i, inside = stack.pop()
        if i < len(prog) and prog[i][0] in ("star", "dstar", "dslash") and not inside:
            nxt = (i + 1, False)
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _run(prog: list[Token], name: str) -> bool:
    states = _closure(prog, {(0, False)})
    for c in name:
        nxt: set[tuple[int, bool]] = set()
        for i, _inside in states:
            if i >= len(prog):
                continue
            t = prog[i]
            kind = t[0]
            if kind == "lit":
                if c == t[1]:
                    nxt.add((i + 1, False))
            elif kind == "any1":
                if c != "/":
                    nxt.add((i + 1, False))
            elif kind == "set":
                hit = c in t[2] or any(lo <= c <= hi for lo, hi in t[3])
                if hit != t[1] and c != "/":
                    nxt.add((i + 1, False))
            elif kind == "star":
                if c != "/":
                    nxt.add((i, False))
            elif kind == "dstar":
                nxt.add((i, False))
            elif kind == "dslash":
                nxt.add((i, True))  # inside: must end with '/' before leaving
                if c == "/":
                    nxt.add((i + 1, False))
        if not nxt:
            return False
        states = _closure(prog, nxt)
    return (len(prog), False) in states


@lru_cache(maxsize=256)
def glob_matcher(glob: str) -> Glob:
    return Glob(glob)


@dataclass(frozen=True)
class Skip:
    """The event belongs to a trigger but deliberately starts nothing (acked, counted)."""

    trigger: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A completed data version: one job, identified by (bucket, key_object, key_generation)."""

    trigger: str
    bucket: str
    version_prefix: str
    key_object: str  # the version folder (or a metadata-update key)
    key_generation: int  # 0 for the first completion; the new generation of an overwrite that retrains
    generation: int  # the data generation (orders Replace/Forbid): the completing object's generation
    source_object: str  # the object that completed it (marker, or newest object of the version)

    @property
    def data_uri(self) -> str:
        return f"gs://{self.bucket}/{self.version_prefix}"


@dataclass(frozen=True)
class Pending:
    """Debounce mode: the event adds to a version that is not complete yet."""

    trigger: str
    bucket: str
    version_prefix: str
    generation: int
    overwrite: bool
    source_object: str


Decision = Skip | Candidate | Pending


class Rule:
    """One compiled trigger."""

    def __init__(self, trig: Trigger) -> None:
        self.trigger = trig
        self.glob = glob_matcher(trig.glob) if trig.glob else None

    def version_of(self, name: str) -> str | None:
        """The version folder (with trailing '/') that object ``name`` lies in, or None."""
        t = self.trigger
        if not name.startswith(t.prefix):
            return None
        parts = name[len(t.prefix) :].split("/")
        if len(parts) <= t.version_depth or any(not p for p in parts[: t.version_depth]):
            return None
        return t.prefix + "".join(p + "/" for p in parts[: t.version_depth])

    def wants(self, name: str) -> bool:
        return self.glob is None or self.glob.match(name)

    def matches(self, ev: ObjectEvent) -> bool:
        t = self.trigger
        if ev.bucket != t.bucket or not ev.name.startswith(t.prefix):
            return False
        return self.wants(ev.name)

    def decide(self, ev: ObjectEvent) -> Decision | None:
        """None: not this trigger's object. Otherwise what to do with it."""
        t = self.trigger
        if not self.matches(ev):
            return None
        version = self.version_of(ev.name)
        if version is None:
            return Skip(t.name, "outside_version")
        if ev.event_type in (DELETE, ARCHIVE):
            return Skip(t.name, "deleted")
        key_object, key_generation = version, 0
        overwrite = False
        if ev.event_type == METADATA_UPDATE:
            if t.metadata_updates == "ignore":
                return Skip(t.name, "metadata_update")
            key_object, key_generation = f"{ev.name}#metageneration={ev.metageneration}", ev.generation
        elif ev.event_type == FINALIZE and ev.overwrote_generation is not None:
            if t.overwrites == "ignore":
                return Skip(t.name, "overwrite")
            overwrite, key_generation = True, ev.generation
        if t.completion == "marker":
            base = ev.name[len(version) :]
            if base not in t.markers:
                return Skip(t.name, "not_marker")
            return Candidate(t.name, ev.bucket, version, key_object, key_generation, ev.generation, ev.name)
        if ev.event_type == METADATA_UPDATE:
            return Candidate(t.name, ev.bucket, version, key_object, key_generation, ev.generation, ev.name)
        return Pending(t.name, ev.bucket, version, ev.generation, overwrite, ev.name)


class Rules:
    def __init__(self, triggers: Iterable[Trigger]) -> None:
        self.rules = [Rule(t) for t in triggers]
        self.by_name = {r.trigger.name: r for r in self.rules}

    def decide(self, ev: ObjectEvent) -> list[Decision]:
        """Decisions of every trigger the event matches (empty: no trigger wants it)."""
        out = []
        for rule in self.rules:
            d = rule.decide(ev)
            if d is not None:
                out.append(d)
        return out
