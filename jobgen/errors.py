"""User-facing errors: each names the file, the field path and what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def format_path(path: Iterable[Any]) -> str:
    """``['a', 'b', 0, 'c.d']`` -> ``a.b[0].c\\.d`` (helm's --set syntax)."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            text = str(seg)
            out += ("." if out else "") + (text.replace(".", "\\.") if "." in text else text)
    return out


class FieldError(ValueError):
    """A validation error that knows its field path (pydantic reports cross-field errors at the root)."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what was expected."""

    path: str
    message: str

    def render(self, source: str | None) -> str:
        where = f"{source}: " if source else ""
        at = f"{self.path}: " if self.path else ""
        return f"{where}{at}{self.message}"


@dataclass
class UserError(Exception):
    """An error caused by the user's input. The CLI prints it without a traceback and exits 2."""

    problems: list[Problem]
    source: str | None = None
    exit_code: int = 2
    hint: str | None = field(default=None)

    @classmethod
    def one(cls, path: str, message: str, source: str | None = None) -> UserError:
        return cls([Problem(path, message)], source)

    def __str__(self) -> str:
        lines = [p.render(self.source) for p in self.problems]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class ClusterError(Exception):
    """The cluster could not be reached or refused the request. One line, exit 1."""

    exit_code = 1


class ApiRejected(Exception):
    """The apiserver answered with an error status (the message is the apiserver's). Exit 1."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
