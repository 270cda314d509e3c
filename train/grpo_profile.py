"""Where a GRPO step's time goes: rollouts, log-prob forwards, rewards, backward and optimizer.

    python -m train.grpo_profile [--out grpo.prof] -- GRPO ARGUMENTS (as for python -m train.grpo)

Runs train.grpo under cProfile and prints the seconds spent in each phase, summed over the run (give it a
few steps: the first one also warms up). The full profile is saved for `python -m pstats` or snakeviz.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys

# (phase, the functions whose cumulative time is that phase's: file suffix, function name)
PHASES = (
    ("rollouts (generate)", ("transformers/generation/utils.py", "generate")),
    ("log-prob forwards (old, reference, loss)", ("train/grpo.py", "_get_per_token_logps_and_entropies")),
    ("rewards (the judge's reward functions)", ("train/rewards.py", "_scores")),
    ("backward", ("torch/_tensor.py", "backward")),
    ("optimizer step", ("torch/optim/optimizer.py", "wrapper")),
    ("prompt and media encoding", ("rrm/inputs.py", "encode")),
)


def phases(stats: pstats.Stats) -> dict[str, float]:
    """Seconds per phase (the outermost call of each phase's function: recursion is not counted twice)."""
    found = {}
    for name, (suffix, function) in PHASES:
        found[name] = max((cumulative for (path, _, fn), (_, _, _, cumulative, _) in stats.stats.items()
                           if fn == function and path.endswith(suffix)), default=0.0)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.grpo_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="grpo.prof", help="where the full profile is written")
    parser.add_argument("grpo", nargs=argparse.REMAINDER, help="-- then train.grpo's arguments")
    args = parser.parse_args(argv)
    from .grpo import main as grpo_main

    grpo_args = args.grpo[1:] if args.grpo[:1] == ["--"] else args.grpo
    profiler = cProfile.Profile()
    code = profiler.runcall(grpo_main, grpo_args)
    profiler.dump_stats(args.out)
    stats = pstats.Stats(profiler)
    print("| phase | seconds | share of the run |\n|---|---|---|")
    for name, seconds in phases(stats).items():
        print(f"| {name} | {seconds:.4f} | {100 * seconds / stats.total_tt:.1f} % |")
    print(f"| whole run (model loading included) | {stats.total_tt:.1f} | 100 % |")
    return code


if __name__ == "__main__":
    sys.exit(main())
