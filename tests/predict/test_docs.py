"""docs/jobspec.md documents every field of the BatchPrediction spec."""

from __future__ import annotations

import re

from jobgen.predict.spec import PredictionSpec

from ..conftest import REPO
from ..unit.test_docs import _fields


def test_every_prediction_field_is_documented():
    text = (REPO / "docs/jobspec.md").read_text()
    section = text[text.index("## Batch prediction (`kind: BatchPrediction`)") :]
    section = re.sub(r"```.*?```", "", section, flags=re.S)
    documented = {tok for span in re.findall(r"`([^`]+)`", section) for tok in re.findall(r"[A-Za-z]+", span)}
    # Resources and placement fields are documented in their (shared) training sections.
    inherited = {
        "cpu",
        "memory",
        "gpu",
        "ephemeralStorage",
        "accelerator",
        "spot",
        "priorityClass",
        "queue",
        "nodeSelector",
        "tolerations",
        "key",
        "operator",
        "value",
        "effect",
        "tolerationSeconds",
        "terminationGracePeriodSeconds",
    }
    missing = sorted(_fields(PredictionSpec, set()) - documented - inherited)
    assert missing == []
