"""Check the omni-rrm-release rewards against the release's own reward code, on fuzzed completions.

    git clone https://github.com/tmfk418/Omni-RRM /tmp/Omni-RRM
    python -m train.check_release_rewards /tmp/Omni-RRM/train/new_plugin.py [--n 60000] [--seed 0]

The release's plugin imports ms-swift only for its base classes and registries; stand-ins for those are put in
place, so the release's MMFormatORM, MMContentORM and MMRubricORM run as published, beside ours, on the same
completions and ground truths: valid judgments, cut off, fenced, with prose around, raw newlines, trailing commas,
wrong key sets, odd score types and random rationales. Prints the number of completions on which any component
differs by more than 1e-6 (exit status 1 when there are any).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import random
import sys
import types

from rrm.schema import VERDICT_TIE

from .rewards import Truth, release_format, release_preference, release_rubric

PLUGIN_LOGGER = "release-plugin"  # the logger the stand-in for ms-swift hands the release plugin

_WORDS = ("fluency coherence flow coherent relevance related pertinent alignment accuracy accurate correct "
          "correctness precision reasoning analysis logic logical inference safety safe ethical harmless toxic "
          "toxicity A B a b answer response candidate model option both two each either neither all responses "
          "answers better worse superior inferior preferable outperforms more less clear the is and of Part 1: 2: "
          "3: \\n , . ;").split()


def load_release_plugin(path: str):
    """The release's plugin module, with stand-ins for the ms-swift names it imports."""
    class ORM:
        pass

    class DefaultRMPlugin:
        def __init__(self, *args, **kwargs):
            pass

    stubs = {name: types.ModuleType(name) for name in (
        "swift", "swift.llm", "swift.llm.infer", "swift.llm.infer.protocol", "swift.plugin", "swift.plugin.rm_plugin",
        "swift.utils")}
    for name in ("PtEngine", "RequestConfig", "Template"):
        setattr(stubs["swift.llm"], name, object)
    stubs["swift.llm"].to_device = lambda *args, **kwargs: None
    stubs["swift.llm.infer.protocol"].ChatCompletionResponse = object
    stubs["swift.plugin"].ORM, stubs["swift.plugin"].orms, stubs["swift.plugin"].rm_plugins = ORM, {}, {}
    stubs["swift.plugin.rm_plugin"].DefaultRMPlugin = DefaultRMPlugin
    stubs["swift.utils"].get_logger = lambda: logging.getLogger(PLUGIN_LOGGER)
    sys.modules.update({k: v for k, v in stubs.items() if k not in sys.modules})
    spec = importlib.util.spec_from_file_location("release_plugin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Fuzz:
    """Completions and ground truths of every shape the rewards must score."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def pick(self, *options):
        return self.rng.choice(options)

    def reasoning(self) -> str:
        body = " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(0, 60)))
        return self.pick(body, f"<think>{body}</think>", f"<think> {body} </think> tail", f"<THINK>{body}</THINK>")

    def score(self):
        return self.pick(0, 3, 5, 8, 10, 11, -1, 7.5, 7.0, "7", " 8 ", "7/10", "x", None, True, False, [1], {"a": 1},
                         1e400)

    def letter(self):
        return self.pick("A", "B", "equal", "a", "b", "tie", "EQUAL", None, 1, ["A"], "")

    def final(self):
        return self.pick("<answer>[[A]]</answer>", "<answer>[[B]]</answer>", "<answer>[[equal]]</answer>",
                         " <answer>[[A]]</answer> extra", "[[A]]", "A", None, ["<answer>[[A]]</answer>"],
                         "<answer>[[a]]</answer>")

    def judgment(self) -> dict:
        obj = {"score_A": self.score(), "score_B": self.score(), "better": self.letter(),
               "reasoning": self.reasoning(), "final_verdict": self.final()}
        obj = {k: v for k, v in obj.items() if self.rng.random() >= 0.1}
        if self.rng.random() < 0.1:
            obj["extra"] = 1
        if self.rng.random() < 0.1:
            obj = {("score_1" if k == "score_A" else k): v for k, v in obj.items()}
        return obj

    def completion(self) -> str:
        text = json.dumps(self.judgment())
        return self.pick(
            text, text, text, "```json\n" + text + "\n```", "```\n" + text + "```",
            text[: self.rng.randint(0, len(text))],
            "Here it is: " + text, text + " Done.", text[:-1] + ",}", text.replace("\\n", "\n"), "[" + text + "]",
            "  \n" + text + "\n  ", '"just a string"', "42")

    def truth(self) -> tuple:
        better = self.letter() if self.rng.random() < 0.2 else self.pick("A", "B", "equal")
        scores = [self.score() if self.rng.random() < 0.2 else self.rng.randint(0, 10) for _ in range(2)]
        return better, *scores


def compare(plugin, n: int, seed: int) -> tuple[int, list[str]]:
    formats, contents, rubrics = plugin.MMFormatORM(), plugin.MMContentORM(), plugin.MMRubricORM()
    fuzz, differing, examples = Fuzz(seed), 0, []
    for _ in range(n):
        text = fuzz.completion()
        better, score_a, score_b = fuzz.truth()
        # Our labels say "tie" where the release says "equal"; its own "tie" is no label of ours.
        label = VERDICT_TIE if better == "equal" else ("release-tie" if better == "tie" else better)
        ours = (release_format(text), release_preference(text, Truth(label, score_a, score_b)), release_rubric(text))
        theirs = (formats([text])[0], contents([text], better=[better], score_A=[score_a], score_B=[score_b])[0],
                  rubrics([text])[0])
        if any(abs(a - b) > 1e-6 for a, b in zip(ours, theirs)):
            differing += 1
            if len(examples) < 5:
                examples.append(f"{text[:120]!r}: ours {ours}, the release's {theirs}")
    return differing, examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.check_release_rewards", description=__doc__.split("\n\n")[0])
    parser.add_argument("plugin", help="the release's train/new_plugin.py")
    parser.add_argument("--n", type=int, default=60_000, help="completions to compare")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger(PLUGIN_LOGGER).disabled = True  # the release's content reward logs every parse failure
    try:
        plugin = load_release_plugin(args.plugin)
    except (OSError, SyntaxError, ImportError, AttributeError) as e:
        print(f"error: cannot load {args.plugin} as the release's reward plugin: {e}", file=sys.stderr)
        return 2
    differing, examples = compare(plugin, args.n, args.seed)
    print(f"{args.n} completions, {differing} on which a component differs from the release's by more than 1e-6")
    for line in examples:
        print(f"  {line}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
