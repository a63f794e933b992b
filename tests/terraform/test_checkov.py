"""checkov over terraform/, charts/ and manifests/: 0 failed checks outside
the short skip list in .checkov.yaml, each skip with its reason.

checkov runs from its own version-keyed virtualenv outside the repo
(hack/terraform/checkov.sh creates it with pip on first use, ~80 s)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from .conftest import HACK, REPO

CONFIG = REPO / ".checkov.yaml"
MAX_SKIPS = 8


def skip_entries() -> list[tuple[str, str, str]]:
    """(section, entry, reason) for every skip-check / skip-path item."""
    entries, section = [], None
    for line in CONFIG.read_text().splitlines():
        if re.match(r"^[a-z-]+:", line):
            section = line.split(":", 1)[0]
            continue
        m = re.match(r"^\s+-\s+(\S+)\s*(?:#\s*(.*))?$", line)
        if m and section in ("skip-check", "skip-path"):
            entries.append((section, m.group(1), (m.group(2) or "").strip()))
    return entries


def test_skip_list_is_short_and_every_skip_has_a_reason():
    entries = skip_entries()
    assert entries, "expected the skip list in .checkov.yaml"
    assert len(entries) <= MAX_SKIPS, f"{len(entries)} skips: keep the list short"
    for section, entry, reason in entries:
        assert len(reason) >= 40, f"{section} {entry} needs a reason (a comment after it)"


def test_inline_skips_have_reasons():
    found = 0
    for base in ("terraform", "charts", "manifests"):
        for path in (REPO / base).rglob("*"):
            if not path.is_file() or path.suffix not in (".tf", ".yaml", ".yml", ".tpl"):
                continue
            for m in re.finditer(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", path.read_text(errors="replace")):
                found += 1
                assert m.group(2) and len(m.group(2).strip()) >= 30, f"{path}: skip of {m.group(1)} has no reason"
    assert found <= MAX_SKIPS


def run_checkov(*args: str) -> list[dict]:
    res = subprocess.run(
        [str(HACK / "checkov.sh"), *args, "-o", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        check=False,
    )
    assert res.returncode in (0, 1), f"checkov did not run (exit {res.returncode}):\n{res.stderr[-3000:]}"
    # checkov may print more than one JSON document (a report, then a list of reports).
    reports, text, pos, decoder = [], res.stdout, 0, json.JSONDecoder()
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        doc, pos = decoder.raw_decode(text, pos)
        reports.extend(doc if isinstance(doc, list) else [doc])
    assert reports, f"checkov printed no report:\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
    return reports


def test_checkov_has_no_failures():
    dirs = [a for d in ("terraform", "charts", "manifests") if any((REPO / d).rglob("*.*")) for a in ("-d", d)]
    reports = run_checkov("--config-file", str(CONFIG), *dirs)
    by_type = {r["check_type"]: r for r in reports if "check_type" in r}
    assert by_type["terraform"]["summary"]["passed"] >= 50, "the Terraform scan must actually check the configuration"
    assert "kubernetes" in by_type, "manifests/ must be scanned"
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert failed == [], "checkov failures:\n" + "\n".join(failed)


def test_checkov_catches_a_public_bucket(tmp_path: Path):
    """The scan can fail: a bucket without public access prevention is reported."""
    (tmp_path / "main.tf").write_text(
        'resource "google_storage_bucket" "b" {\n  name = "x"\n  location = "US"\n'
        '  uniform_bucket_level_access = true\n  public_access_prevention = "inherited"\n}\n'
    )
    reports = run_checkov("--config-file", str(CONFIG), "-d", str(tmp_path))
    ids = {c["check_id"] for r in reports for c in r.get("results", {}).get("failed_checks", [])}
    assert "CKV_GCP_114" in ids, ids
