"""verl's custom reward file: `custom_reward_function.path` points here (verl loads it by path, so it imports
rrm absolutely), `name` is compute_score or, with verl's batch reward manager, compute_score_batch."""

from rrm.reward import compute_score, compute_score_batch

__all__ = ["compute_score", "compute_score_batch"]
