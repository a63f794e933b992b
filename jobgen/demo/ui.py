"""What the demo prints, and the one error it reports."""

from __future__ import annotations

from pathlib import Path


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, total: int, title: str) -> None:
    say(f"\n\033[1m[{n}/{total}] {title}\033[0m")


class DemoError(Exception):
    pass


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
