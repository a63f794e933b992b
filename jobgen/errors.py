"""User-facing errors: each names the file, the field path and what was expected."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    def one(cls, path: str, message: str, source: str | None = None) -> "UserError":
        return cls([Problem(path, message)], source)

    def __str__(self) -> str:
        lines = [p.render(self.source) for p in self.problems]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class ClusterError(Exception):
    """The cluster could not be reached or refused the request. One line, exit 1."""

    exit_code = 1
