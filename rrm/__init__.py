"""Omni-RRM judge library: judge which of two responses is better, criterion by criterion.

Imports stay light: the model stack (torch, transformers) loads on first use.
"""

from .errors import MediaError, ModelLoadError, RRMError
from .rubric import DEFAULT_RUBRIC, Criterion, Rubric, load_rubric
from .schema import CriterionResult, Grade, Judgment, MediaItem, ParseStatus, Sample, SwapCheck, Timing

__all__ = [
    "Judge", "GenerationSettings", "MediaError", "ModelLoadError", "RRMError", "DEFAULT_RUBRIC", "Criterion",
    "Rubric", "load_rubric", "CriterionResult", "Grade", "Judgment", "MediaItem", "ParseStatus", "Sample",
    "SwapCheck", "Timing",
]


def __getattr__(name):
    if name in ("Judge", "GenerationSettings"):
        from . import judge

        return getattr(judge, name)
    raise AttributeError(f"module 'rrm' has no attribute {name!r}")
