"""ms-swift's reward plugin: `swift rlhf --rlhf_type grpo --external_plugins rrm/swift_plugin.py
--reward_funcs omni_rrm ...`, with the judge named by $RRM_JUDGE_MODEL (and $RRM_JUDGE_ENDPOINT for a served
one). Importing this module needs ms-swift; nothing else in rrm imports it."""

from swift.plugin import ORM, orms

from rrm.reward import swift_rewards


class OmniRRMReward(ORM):
    """Each completion judged by Omni-RRM against the row's `solution` (rrm.reward.swift_rewards)."""

    def __call__(self, completions, **kwargs):
        return swift_rewards(completions, **kwargs)


orms["omni_rrm"] = OmniRRMReward
