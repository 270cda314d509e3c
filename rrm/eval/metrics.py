"""Accuracy metrics over per-item records: pure functions, the one definition of "correct".

A record holds the item's label and the verdict read in each order, both mapped
to the item's own A and B: {"id", "subset", "label", "verdict_ab", "verdict_ba",
"tokens": [ab, ba], "seconds", "failed"}. A tie or a missing verdict counts as
wrong in every accuracy; their rates are reported on their own too.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..schema import VERDICT_TIE

HEADLINE = "accuracy"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def group_metrics(records: Sequence[dict]) -> dict:
    n = len(records)
    if n == 0:
        return {"items": 0}
    ab = [r["verdict_ab"] for r in records]
    ba = [r["verdict_ba"] for r in records]
    labels = [r["label"] for r in records]
    acc_ab = sum(v == y for v, y in zip(ab, labels)) / n
    acc_ba = sum(v == y for v, y in zip(ba, labels)) / n
    return {
        "items": n,
        HEADLINE: (acc_ab + acc_ba) / 2,  # swap-averaged
        "accuracy_a_first": acc_ab,
        "accuracy_b_first": acc_ba,
        "swap_consistency": sum(a is not None and a == b for a, b in zip(ab, ba)) / n,
        "tie_rate": (ab.count(VERDICT_TIE) + ba.count(VERDICT_TIE)) / (2 * n),
        "parse_failure_rate": (ab.count(None) + ba.count(None)) / (2 * n),
        "unjudged": sum(bool(r.get("failed")) for r in records),
        "mean_generated_tokens": _mean(t for r in records for t in r.get("tokens") or ()),
        "mean_seconds_per_judgment": _mean(r.get("seconds") for r in records),
    }


def summarize(records: Sequence[dict]) -> dict:
    """Per subset, micro over all items, and macro (the mean over subsets) where there are several."""
    subsets: dict[str, list[dict]] = {}
    for r in records:
        subsets.setdefault(r.get("subset") or "all", []).append(r)
    per_subset = {name: group_metrics(rs) for name, rs in sorted(subsets.items())}
    summary = {"micro": group_metrics(records), "subsets": per_subset}
    if any(r["label"] == VERDICT_TIE for r in records):  # Omni-RewardBench: also reported without its tie items
        summary["micro_without_ties"] = group_metrics([r for r in records if r["label"] != VERDICT_TIE])
    if len(per_subset) > 1:
        keys = [k for k in summary["micro"] if k not in ("items", "unjudged")]
        summary["macro"] = {"items": len(records), "subsets": len(per_subset),
                            **{k: _mean(m.get(k) for m in per_subset.values()) for k in keys}}
    return summary


COLUMNS = (("accuracy", "acc"), ("accuracy_a_first", "acc A first"), ("accuracy_b_first", "acc B first"),
           ("swap_consistency", "swap consistency"), ("tie_rate", "ties"), ("parse_failure_rate", "parse failures"))


def pct(x: float | None) -> str:
    """A rate as a percentage with one decimal; a dash when there is none."""
    return "–" if x is None else f"{100 * x:.1f}"


def markdown_table(summary: dict, title: str = "") -> str:
    rows = [(name, m) for name, m in summary["subsets"].items()] if len(summary["subsets"]) > 1 else []
    if "macro" in summary:
        rows.append(("**macro**", summary["macro"]))
    rows.append(("**micro**" if rows else "**all**", summary["micro"]))
    head = "| subset | items | " + " | ".join(label for _, label in COLUMNS) + " | tokens | s/judgment |"
    lines = ([f"### {title}", ""] if title else []) + [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for name, m in rows:
        tokens = m.get("mean_generated_tokens")
        seconds = m.get("mean_seconds_per_judgment")
        lines.append(f"| {name} | {m['items']} | " + " | ".join(pct(m.get(k)) for k, _ in COLUMNS)
                     + f" | {'–' if tokens is None else f'{tokens:.0f}'} | "
                     f"{'–' if seconds is None else f'{seconds:.2f}'} |")
    return "\n".join(lines) + "\n"
