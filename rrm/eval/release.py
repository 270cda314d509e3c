"""The release's own evaluation protocols, one per benchmark: `python -m rrm.eval run --protocol release`.

Read from the public release (tmfk418/Omni-RRM, inference/*/infer_lora*.py and eval.py): each benchmark was
judged once per item, with its own order, sampling, way of reading the verdict, and rules for an unreadable
output and for a tie. Reproduced here so that a number can be put beside the paper's; the default protocol
(`two-order`: both orders, greedy, every unreadable output and tie counted wrong) stays this project's headline,
because the release's protocols reward position bias (ShareGPT-Video keeps the preferred answer first) and read
verdicts leniently.

- vl-rewardbench: a seeded coin per item decides the order; temperature 0.7, top-p 0.9, 4,096 tokens; `better`
  of the first brace block naming it, then looser patterns ("equal" there reads as the second answer);
  unreadable outputs and ties are left out.
- mm-rewardbench: as given; temperature 0.7, top-p 0.9, 4,096 tokens; the output as strict JSON
  (`final_verdict`, then `better`), else [[A]] / [[B]] anywhere; an unreadable output gets a seeded coin; a tie
  is wrong.
- sharegpt-video: as given; greedy, 2,048 tokens; the span from the first { to the last }, checked strictly;
  unreadable outputs and ties are left out.
- audio-hh-rlhf, hh-rlhf: as given; greedy, 2,048 tokens; `better` of the JSON in a fence, else from the first
  { to the last }; unreadable outputs are left out, a tie is wrong.
- omni-rewardbench-ta2t: as audio-hh-rlhf (the release has no script for it); a tie is right on a tie item, and
  the benchmark is reported with and without its tie items.

Groups: VL-RewardBench's official three (general, hallucination, reasoning) with their overall and macro
accuracy; Multimodal RewardBench's categories (safety and reasoning split by item id), as the release's eval
does. Accuracy is right / (right + wrong): items left out do not count, and their number is reported.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import RRMError
from ..schema import ORDER_AB, ORDER_BA, VERDICT_A, VERDICT_B, VERDICT_TIE

# MM-RewardBench's eval seeds its coin once and draws it, in file order, for each unreadable output.
COIN_SEED = 123
_LETTER = {"A": VERDICT_A, "B": VERDICT_B, "equal": VERDICT_TIE}


@dataclass(frozen=True)
class Rules:
    shuffle: bool  # show each item in a seeded random order (else as given)
    temperature: float
    top_p: float
    max_new_tokens: int
    read: Callable[[str], str | None]  # the verdict in the order shown: A, B, tie, or None when unreadable
    unreadable: str = "drop"  # "drop" (left out) or "coin" (a seeded coin decides)
    tie: str = "wrong"  # a tie verdict: "wrong", "drop", or "label" (right when the item's label is a tie)
    tied_label: str | None = None  # what an item labelled as a tie counts as, where the release decides
    group: Callable[[str, str], str] = lambda subset, item_id: "all"


def _loads(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


# ---------------------------------------------------------------- verdict readers (the release's, per benchmark)

def read_mm_rewardbench(text: str) -> str | None:
    data = _loads(text.strip())
    if isinstance(data, dict):
        final, better = data.get("final_verdict"), data.get("better")
        if isinstance(final, str):
            if "[[A]]" in final:
                return VERDICT_A
            if "[[B]]" in final:
                return VERDICT_B
            if "equal" in final.lower():
                return VERDICT_TIE
        if "final_verdict" not in data or isinstance(final, str):
            if isinstance(better, str) and better.upper() in ("A", "B", "EQUAL"):
                return _LETTER.get(better.upper(), VERDICT_TIE)
    if "[[A]]" in text:
        return VERDICT_A
    if "[[B]]" in text:
        return VERDICT_B
    return None


_BRACE_BLOCK_WITH_BETTER = re.compile(r"\{[^{}]*\"better\"[^{}]*\}", re.S)
_FENCED_OBJECT = re.compile(r"```(?:json)?\s*(\{.*?})\s*```", re.S)
_BETTER_LETTER = re.compile(r'"better"\s*:\s*"?([AaBb]|equal)"?', re.I)
_BETTER_NUMBER = re.compile(r'"better"\s*:\s*"?(1|2)"?', re.I)
_SAYS_BETTER = re.compile(r"(?:Overall\s*Judgment|Final\s*Decision|Therefore)?[^\n]*?Answer\s*([12])\s*"
                          r"(?:is\s*)?(?:the\s*)?(?:slightly\s*)?(?:better|superior)", re.I)


def _first_or_second(data) -> str | None:
    value = str(data.get("better", "")).lower() if isinstance(data, dict) else ""
    return VERDICT_A if value in ("a", "1") else VERDICT_B if value in ("b", "2") else None


def read_vl_rewardbench(text: str) -> str | None:
    raw = text.strip()
    block = _BRACE_BLOCK_WITH_BETTER.search(raw)
    if block:
        data = _loads(block.group(0))
        if data is not None:  # a readable block decides, even when its `better` is no answer (a tie)
            return _first_or_second(data)
    for candidate in (raw, *(m.group(1) for m in [_FENCED_OBJECT.search(raw)] if m)):
        verdict = _first_or_second(_loads(candidate))
        if verdict:
            return verdict
    letter = _BETTER_LETTER.search(raw)
    if letter:
        return VERDICT_A if letter.group(1).lower() == "a" else VERDICT_B  # "equal" reads as the second answer
    number = _BETTER_NUMBER.search(raw) or _SAYS_BETTER.search(raw)
    return {"1": VERDICT_A, "2": VERDICT_B}[number.group(1)] if number else None


_GREEDY_OBJECT = re.compile(r"\{.*\}", re.S)


def _valid_sharegpt(obj, outer_better: str | None = None) -> bool:
    keys = ("score_A", "score_B", "better", "reasoning", "final_verdict")
    if not all(k in obj for k in keys):
        return False
    try:
        scores = int(obj["score_A"]), int(obj["score_B"])
    except (TypeError, ValueError, OverflowError):
        return False
    better = obj["better"]
    final = obj["final_verdict"]
    return (all(0 <= s <= 10 for s in scores) and better in ("A", "B", "equal")
            and isinstance(final, str) and final.strip() == f"<answer>[[{better}]]</answer>"
            and not (outer_better and outer_better != better))


def read_sharegpt_video(text: str) -> str | None:
    span = _GREEDY_OBJECT.search(text)
    obj = _loads(span.group(0)) if span else None
    if not isinstance(obj, dict):
        return None
    if "score_A" in obj and "score_B" in obj:
        return _LETTER[obj["better"]] if _valid_sharegpt(obj) else None
    if "better" in obj and isinstance(obj.get("reasoning"), str):  # an older shape: the judgment inside reasoning
        inner_span = _GREEDY_OBJECT.search(obj["reasoning"])
        inner = _loads(inner_span.group(0)) if inner_span else None
        if isinstance(inner, dict) and _valid_sharegpt(inner, obj.get("better")):
            return _LETTER[inner["better"]]
    return None


_FENCED_JSON = re.compile(r"```(?:json)?\s*(\{[\s\S]*?\})\s*```")


def read_hh(text: str) -> str | None:
    fenced = _FENCED_JSON.search(text)
    if fenced:
        candidate = fenced.group(1)
    else:
        start, end = text.find("{"), text.rfind("}")
        candidate = text[start:end + 1] if start != -1 and end > start else text
    data = _loads(re.sub(r"\bNone\b", "", candidate))
    better = data.get("better") if isinstance(data, dict) else None
    return _LETTER.get(better) if isinstance(better, str) else None


# ---------------------------------------------------------------- groups

_VL_GROUPS = (("hallucination", ("povid", "rlhf-v", "rlaif-v", "hallucination")),
              ("reasoning", ("reasoning", "mathverse", "mmmu")),
              ("general", ("vlfeedback", "wildvision")))


def vl_rewardbench_group(subset: str, item_id: str) -> str:
    """VL-RewardBench's official grouping of its sources."""
    name = f"{subset} {item_id}".lower()
    return next((group for group, sources in _VL_GROUPS if any(s in name for s in sources)), subset)


def mm_rewardbench_group(subset: str, item_id: str) -> str:
    if subset == "safety":
        return "safety/bias" if item_id.lower().startswith("pairs") else "safety/toxicity"
    if subset == "reasoning":
        return "reasoning/math" if item_id.lower().startswith("math") else "reasoning/coding"
    return subset


_GREEDY = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 2048}
_SAMPLED = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 4096}
RULES: dict[str, Rules] = {
    "vl-rewardbench": Rules(True, **_SAMPLED, read=read_vl_rewardbench, tie="drop", tied_label=VERDICT_B,
                            group=vl_rewardbench_group),
    "mm-rewardbench": Rules(False, **_SAMPLED, read=read_mm_rewardbench, unreadable="coin",
                            group=mm_rewardbench_group),
    "sharegpt-video": Rules(False, **_GREEDY, read=read_sharegpt_video, tie="drop"),
    "audio-hh-rlhf": Rules(False, **_GREEDY, read=read_hh),
    "hh-rlhf": Rules(False, **_GREEDY, read=read_hh),
    "omni-rewardbench-ta2t": Rules(False, **_GREEDY, read=read_hh, tie="label"),
}

# The paper's accuracy (%) for the released judges (SFT then GRPO), as the release's README reports it
# (TA2T with its tie items included). HH-RLHF is not in the paper's table.
PAPER = {
    "vl-rewardbench": {"Omni-RRM-7B": 67.1, "Omni-RRM-3B": 58.5},
    "mm-rewardbench": {"Omni-RRM-7B": 72.9, "Omni-RRM-3B": 68.9},
    "sharegpt-video": {"Omni-RRM-7B": 80.2, "Omni-RRM-3B": 67.4},
    "audio-hh-rlhf": {"Omni-RRM-7B": 66.8, "Omni-RRM-3B": 65.1},
    "omni-rewardbench-ta2t": {"Omni-RRM-7B": 65.0, "Omni-RRM-3B": 61.1},
}
PAPER_MODELS = ("Omni-RRM-7B", "Omni-RRM-3B")


def rules_for(benchmark: str) -> Rules:
    try:
        return RULES[benchmark]
    except KeyError:
        raise RRMError(f"the release has no protocol for {benchmark!r}; --protocol release knows: "
                       f"{', '.join(RULES)}") from None


def shown_order(item_id: str, seed: int, rules: Rules) -> str:
    """The order an item is shown in: a seeded coin per item where the release shuffled, else as given."""
    if rules.shuffle and random.Random(f"{seed}:{item_id}").random() < 0.5:
        return ORDER_BA
    return ORDER_AB


# ---------------------------------------------------------------- scoring

def outcomes(rules: Rules, records: Sequence[dict]) -> list[tuple[dict, str, bool]]:
    """(record, "right" | "wrong" | "left out", whether a coin decided), in the benchmark's own item order.

    A record holds "index" (its place in the benchmark file), "label" and "verdict" (the verdict the release's
    reader found, in the item's own A/B frame; None when it found none).
    """
    coin = random.Random(COIN_SEED)
    out = []
    for r in sorted(records, key=lambda r: r["index"]):
        verdict, tossed = r.get("verdict"), False
        if verdict is None and rules.unreadable == "coin":
            verdict, tossed = (VERDICT_A if coin.random() < 0.5 else VERDICT_B), True
        label = rules.tied_label if r["label"] == VERDICT_TIE and rules.tied_label else r["label"]
        if verdict is None or (verdict == VERDICT_TIE and rules.tie == "drop"):
            result = "left out"
        else:
            result = "right" if verdict == label else "wrong"
        out.append((r, result, tossed))
    return out


def _metrics(scored: Sequence[tuple[dict, str, bool]]) -> dict:
    right = sum(result == "right" for _, result, _ in scored)
    counted = sum(result != "left out" for _, result, _ in scored)
    return {"items": len(scored), "counted": counted, "right": right,
            "accuracy": right / counted if counted else None,
            "left_out": len(scored) - counted,
            "ties": sum(r.get("verdict") == VERDICT_TIE for r, _, _ in scored),
            "coin_flips": sum(tossed for _, _, tossed in scored)}


def summarize_release(benchmark: str, records: Sequence[dict]) -> dict:
    """Per group, overall (every counted item), macro (the mean of the groups) and, with tie labels, without ties."""
    rules = rules_for(benchmark)
    scored = outcomes(rules, records)
    groups: dict[str, list] = {}
    for entry in scored:
        groups.setdefault(entry[0].get("group") or "all", []).append(entry)
    summary = {"protocol": "release", "benchmark": benchmark, "overall": _metrics(scored),
               "groups": {name: _metrics(entries) for name, entries in sorted(groups.items())}}
    accuracies = [m["accuracy"] for m in summary["groups"].values() if m["accuracy"] is not None]
    if len(summary["groups"]) > 1 and accuracies:
        summary["macro"] = sum(accuracies) / len(accuracies)
    if any(r["label"] == VERDICT_TIE for r in records) and rules.tie == "label":
        summary["without_ties"] = _metrics([e for e in scored if e[0]["label"] != VERDICT_TIE])
    return summary
