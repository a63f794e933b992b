"""Parse terraform/ with python-hcl2 into plain Python: strings unquoted,
blocks as lists of dicts, block labels without quotes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip(
    "hcl2", reason="python-hcl2 is not installed: it is in the dev extra (pip install -e '.[dev]')"
)
from hcl2.utils import SerializationOptions  # noqa: E402

OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def load(path: Path) -> dict[str, Any]:
    return _clean(hcl2.loads(path.read_text(), serialization_options=OPTIONS))


@dataclass
class Module:
    """The blocks of one Terraform module (a directory of .tf files)."""

    path: Path
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)
    providers: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}


def load_module(path: Path) -> Module:
    mod = Module(path)
    for tf in sorted(path.glob("*.tf")):
        mod.files[tf.name] = tf.read_text()
        doc = load(tf)
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    mod.resources[(rtype, name)] = body
        for block in doc.get("data", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    mod.data[(rtype, name)] = body
        for key, target in (("variable", mod.variables), ("output", mod.outputs), ("module", mod.modules)):
            for block in doc.get(key, []):
                target.update(block)
        mod.terraform.extend(doc.get("terraform", []))
        for block in doc.get("provider", []):
            mod.providers.append(block)
    return mod


def one(block: Any) -> dict[str, Any]:
    """A nested block that appears once (hcl2 gives blocks as lists)."""
    assert isinstance(block, list) and len(block) == 1, block
    return block[0]


def dynamic(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    for d in body.get("dynamic", []):
        if name in d:
            return d[name]
    return None
