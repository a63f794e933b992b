"""The real node's CoreDNS is built with only the plugins in COREDNS_PLUGINS (hack/versions.env,
hack/build-bins.sh): every directive of the Corefile it is given must be one of them, or CoreDNS
refuses to start on the node ("Unknown directive")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jobgen.localcluster.bins import read_versions
from jobgen.localcluster.realnode import Ports, corefile


def directives(text: str) -> set[str]:
    """The first word of each line directly inside the server block (4-space indent)."""
    lines = [line for line in text.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    return {line.split()[0] for line in lines} - {"}"}


def test_every_corefile_directive_is_a_built_plugin():
    fields = {f.name: 10000 + i for i, f in enumerate(dataclasses.fields(Ports))}
    used = directives(corefile(Path("/k/kubeconfig"), Ports(**fields)))
    built = set(read_versions()["COREDNS_PLUGINS"].split())
    assert {"kubernetes", "bind", "health"} <= used  # the parse found the directives
    assert used <= built, f"Corefile directives not built into CoreDNS: {sorted(used - built)}"
