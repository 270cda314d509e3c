"""Reproducible judge accuracy on preference benchmarks, and Best-of-N selection.

    python -m rrm.eval run --benchmark hh-rlhf --data hh_rlhf.jsonl --model M --out runs/hh
    python -m rrm.eval compare runs/hh runs/hh-v2
"""

from .loaders import LOADERS, EvalItem, load_benchmark
from .metrics import group_metrics, summarize
from .run import compare, merge, run

__all__ = ["LOADERS", "EvalItem", "load_benchmark", "group_metrics", "summarize", "compare", "merge", "run"]
