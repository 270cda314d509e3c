"""The synthesis report: kept and dropped per reason and modality, teacher agreement, position and length bias, cost."""

from __future__ import annotations

from itertools import combinations

from rrm.results import percent
from rrm.schema import VERDICT_A, VERDICTS, Judgment

from . import rules


def _share(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None


def _cost(spec, prompt_tokens: int, completion_tokens: int) -> float:
    return round((prompt_tokens * spec.price_in + completion_tokens * spec.price_out) / 1e6, 6)


def _teacher_figures(judgment_records: list[dict], teachers) -> tuple[dict, dict[str, dict[str, str]]]:
    """Per teacher figures, and the verdicts that count (readable, both orders agree) per pair and teacher."""
    figures, counted = {}, {}
    for spec in teachers:
        mine = [r for r in judgment_records if r["teacher"] == spec.name]
        judged = [Judgment.from_dict(r["judgment"]) for r in mine if "judgment" in r]
        readable = [j for j in judged if j.swap and j.swap.verdict_ab and j.swap.verdict_ba]
        agreeing = [j for j in readable if j.swap.agree]
        for j in agreeing:
            counted.setdefault(j.sample_id, {})[spec.name] = j.verdict
        pt = sum(r.get("prompt_tokens", 0) for r in mine)
        ct = sum(r.get("completion_tokens", 0) for r in mine)
        figures[spec.name] = {
            "model": spec.model, "kind": spec.kind, "pairs_judged": len(judged),
            "call_errors": sum("error" in r for r in mine), "readable": len(readable),
            "orders_agree": _share(len(agreeing), len(readable)),
            "verdicts": {v: sum(j.verdict == v for j in agreeing) for v in VERDICTS},
            "prompt_tokens": pt, "completion_tokens": ct, "cost_usd": _cost(spec, pt, ct)}
    return figures, counted


def _agreement(counted: dict[str, dict[str, str]], names: list[str]) -> dict:
    full = [v for v in counted.values() if all(n in v for n in names)]
    out = {"pairs_compared": len(full), "all_agree": _share(sum(len(set(v.values())) == 1 for v in full), len(full))}
    if len(names) > 2:
        for a, b in combinations(names, 2):
            both = [v for v in counted.values() if a in v and b in v]
            out[f"{a} vs {b}"] = _share(sum(v[a] == v[b] for v in both), len(both))
    return out


def _generator_figures(generations: dict[str, dict], generators) -> dict:
    out = {}
    for role, spec in generators.items():
        mine = [r for r in generations.values() if r.get("role") == role]
        pt = sum(r.get("prompt_tokens", 0) for r in mine)
        ct = sum(r.get("completion_tokens", 0) for r in mine)
        out[role] = {"model": spec.model, "kind": spec.kind, "answers": sum("text" in r for r in mine),
                     "errors": sum("error" in r for r in mine), "prompt_tokens": pt, "completion_tokens": ct,
                     "cost_usd": _cost(spec, pt, ct)}
    return out


def build_report(kept: list[dict], tally: rules.Tally, pairs: dict, judgment_records: list[dict], teachers,
                 generations: dict[str, dict], generators: dict, filter_rules: rules.FilterRules, rubric,
                 problems: list[str]) -> dict:
    teacher_figures, counted = _teacher_figures(judgment_records, teachers)
    dropped = {reason: {**tally.dropped[reason], "total": sum(tally.dropped[reason].values())}
               for reason in rules.REASONS if reason in tally.dropped}
    strong_wins = sum(r["sources"][r["label"]] == "strong" for r in kept)
    return {
        "prompts": len(pairs),
        "prompts_skipped": problems,
        "kept": {**tally.kept, "total": len(kept)},
        "splits": {split: sum(r["split"] == split for r in kept) for split in ("sft", "rl")},
        "dropped": dropped,
        "teachers": teacher_figures,
        "agreement": _agreement(counted, [t.name for t in teachers]),
        "position": {"label_A": _share(sum(r["label"] == VERDICT_A for r in kept), len(kept)),
                     "strong_at_A": _share(sum(r["sources"]["A"] == "strong" for r in kept), len(kept)),
                     "strong_wins": _share(strong_wins, len(kept))},
        "length_bias": {"longer_wins_before_rebalance": tally.longer_wins_before,
                        "longer_wins": rules.longer_wins_share(kept)},
        "generators": _generator_figures(generations, generators),
        "rules": {"quality_floor": filter_rules.quality_floor, "hard_gap": filter_rules.hard_gap,
                  "near_duplicate": filter_rules.near_duplicate, "max_longer_wins": filter_rules.max_longer_wins,
                  "seed": filter_rules.seed, "criteria": list(rubric.keys)},
    }


def _pct(x) -> str:
    return percent(x, 1)


def report_markdown(report: dict) -> str:
    modalities = sorted({m for m in report["kept"] if m != "total"}
                        | {m for per in report["dropped"].values() for m in per if m != "total"})
    lines = ["# Omni-Preference synthesis report", "",
             f"{report['prompts']} prompts; {report['kept']['total']} pairs kept "
             f"(sft {report['splits']['sft']}, rl {report['splits']['rl']}).", "",
             "| | " + " | ".join(modalities) + " | total |", "|---" * (len(modalities) + 2) + "|",
             "| kept | " + " | ".join(str(report["kept"].get(m, 0)) for m in modalities)
             + f" | {report['kept']['total']} |"]
    for reason, per in report["dropped"].items():
        lines.append(f"| dropped: {reason} | " + " | ".join(str(per.get(m, 0)) for m in modalities)
                     + f" | {per['total']} |")
    lines += ["", "| teacher | pairs judged | call errors | orders agree | A / B / tie | tokens in / out "
                  "| cost (USD) |", "|---|---|---|---|---|---|---|"]
    for name, t in report["teachers"].items():
        v = t["verdicts"]
        lines.append(f"| {name} | {t['pairs_judged']} | {t['call_errors']} | {_pct(t['orders_agree'])} | "
                     f"{v['A']} / {v['B']} / {v['tie']} | {t['prompt_tokens']} / {t['completion_tokens']} | "
                     f"{t['cost_usd']:.4f} |")
    ag, pos, lb = report["agreement"], report["position"], report["length_bias"]
    lines += ["", f"- Teachers agree on {_pct(ag['all_agree'])} of the {ag['pairs_compared']} pairs every teacher "
                  "judged consistently.",
              f"- Position: the label is A in {_pct(pos['label_A'])} of kept pairs; the strong generator sits at A in "
              f"{_pct(pos['strong_at_A'])} and wins {_pct(pos['strong_wins'])}.",
              f"- Length bias: the longer response wins {_pct(lb['longer_wins'])} of kept pairs "
              f"({_pct(lb['longer_wins_before_rebalance'])} before rebalancing)."]
    if report["generators"]:
        lines += ["", "| generator | model | answers | errors | tokens in / out | cost (USD) |",
                  "|---|---|---|---|---|---|"]
        for role, g in report["generators"].items():
            lines.append(f"| {role} | {g['model']} | {g['answers']} | {g['errors']} | "
                         f"{g['prompt_tokens']} / {g['completion_tokens']} | {g['cost_usd']:.4f} |")
    if report["prompts_skipped"]:
        lines += ["", f"{len(report['prompts_skipped'])} prompt lines skipped:"]
        lines += [f"- {p}" for p in report["prompts_skipped"]]
    return "\n".join(lines) + "\n"
