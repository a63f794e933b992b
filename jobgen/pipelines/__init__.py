"""Kubeflow Pipelines (KFP v2): a job spec compiled to validate data → train → evaluate → register.

Light on purpose: ``import jobgen.pipelines`` imports neither kfp nor kubernetes. See
:mod:`jobgen.pipelines.compile` (``jobgen pipeline``), :mod:`jobgen.pipelines.components` and
:mod:`jobgen.pipelines.runs` (idempotent run creation on a KFP endpoint), and docs/pipelines.md.
"""
