"""Stable public names of the grader (kept importable from here since 0.1).

The grader lives in :mod:`metacog.data.grading` (rules in docs/SCIENCE.md, "Grading short
answers"). New code should import from there.
"""
from metacog.data.grading import grade_mc, grade_short, grade_short_detail, normalize  # noqa: F401
