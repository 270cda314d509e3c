"""Omni-RRM judge library: judge which of two responses is better, criterion by criterion.

Imports stay light: the model stack (torch, transformers) loads on first use.
"""

import logging

from .errors import MediaError, ModelLoadError, RRMError
from .rubric import DEFAULT_RUBRIC, Criterion, Rubric, load_rubric
from .schema import CriterionResult, Grade, Judgment, MediaItem, ParseStatus, Sample, SwapCheck, Timing

# transformers imports torchao whenever it is installed, and torchao's import makes torch warn twice about how it
# registers two enums (torch 2.14, torchao 0.18): noise on every command's stderr, about nothing a user can change.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

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
