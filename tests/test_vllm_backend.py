"""--backend vllm (rrm.vllm_backend): a clear error without vLLM; with the stand-in of tests/vllm_standin.py, the
same judgments as the transformers backend (greedy), media in vLLM's prompt shape, an adapter served as a LoRA
request."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rrm.errors import RRMError
from rrm.eval.__main__ import main as eval_main
from rrm.judge import GenerationSettings, Judge
from rrm.schema import MediaItem, Sample

from . import vllm_standin
from .test_model import _adapter

SETTINGS = GenerationSettings(max_new_tokens=10, min_new_tokens=10)
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "benchmarks"


def test_without_vllm_the_backend_is_one_clear_line(tiny_dir, tmp_path, capsys):
    rc = eval_main(["run", "--benchmark", "hh-rlhf", "--data", str(FIXTURES / "hh_rlhf.jsonl"), "--model",
                    str(tiny_dir), "--out", str(tmp_path / "ev"), "--backend", "vllm"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("error: --backend vllm needs vLLM, which is not installed: pip install vllm "
                               "(on a CUDA machine), or use --backend transformers")


def _samples(media_dir):
    return [Sample("Which answer is right?", "Two plus two is four.", "Two plus two is five.", id="t"),
            Sample("What colour is it?", "Red.", "Blue.", [MediaItem("image", str(media_dir / "red.png"))], id="i"),
            Sample("What moves?", "A dot.", "Nothing.", [MediaItem("video", str(media_dir / "clip.mp4"))], id="v"),
            Sample("What is heard?", "A tone.", "Speech.", [MediaItem("audio", str(media_dir / "tone.wav"))], id="a")]


def test_same_judgments_as_transformers_and_media_in_vllm_shape(tiny_dir, media_dir, monkeypatch):
    vllm_standin.install(monkeypatch)
    fast = Judge.from_pretrained(str(tiny_dir), backend="vllm", generation=SETTINGS)
    samples = _samples(media_dir)
    judgments = fast.judge_batch(samples, batch_size=4, swap_check=True, progress=False)
    init = vllm_standin.LLM.calls[0][1]
    assert init["model"] == str(tiny_dir) and init["enable_lora"] is False and init["quantization"] is None
    _, rows, params, lora = vllm_standin.LLM.calls[1]
    assert rows == 8 and lora is None  # four pairs, two orders each, one engine call
    assert params.temperature == 0 and params.max_tokens == 10 and params.stop_token_ids
    assert params.logit_bias and all(v < 0 for v in params.logit_bias.values())  # media tokens suppressed
    hot = fast.backend.sampling_params(dataclasses.replace(SETTINGS, temperature=0.9, top_k=5, min_p=0.2, seed=3))
    assert (hot.temperature, hot.top_k, hot.min_p, hot.seed, params.min_p) == (0.9, 5, 0.2, 3, 0.0)
    for j in judgments:
        assert j.raw and j.swap is not None and j.swap.other.raw  # both orders came back
        assert j.timing.generated_tokens >= 10
    slow = Judge.from_pretrained(str(tiny_dir), generation=SETTINGS)
    reference = slow.judge_batch(samples[:1], swap_check=True, progress=False)[0]
    assert (judgments[0].raw, judgments[0].swap.other.raw) == (reference.raw, reference.swap.other.raw)
    updates = list(fast.stream(samples[0], swap_check=True))  # the offline engine: one final step
    assert len(updates) == 1 and updates[0].judgment.raw == judgments[0].raw


def test_an_adapter_is_served_as_a_lora_request_on_its_base(tiny_dir, tmp_path, monkeypatch):
    vllm_standin.install(monkeypatch)
    adapter = _adapter(tmp_path, tiny_dir, {"prompt_format": "rubric-v2"})
    fast = Judge.from_pretrained(str(adapter), backend="vllm", generation=SETTINGS)
    assert fast.format.name == "rubric-v2" and fast.backend.info()["adapter"] == str(adapter)
    sample = _samples(tmp_path)[0]
    j = fast.judge(sample, swap_check=True)
    init = vllm_standin.LLM.calls[0][1]
    assert init["model"] == str(tiny_dir) and init["enable_lora"] and init["max_lora_rank"] >= 4
    assert vllm_standin.LLM.calls[1][3].lora_path == str(adapter)
    reference = Judge.from_pretrained(str(adapter), generation=SETTINGS).judge(sample, swap_check=True)
    assert j.raw == reference.raw  # the adapter's weights were used
    with pytest.raises(RRMError, match="8bit is not supported"):
        Judge.from_pretrained(str(adapter), backend="vllm", quantization="8bit")


def test_eval_run_with_the_vllm_backend(tiny_dir, tmp_path, monkeypatch):
    vllm_standin.install(monkeypatch)
    out = tmp_path / "ev"
    rc = eval_main(["run", "--benchmark", "hh-rlhf", "--data", str(FIXTURES / "hh_rlhf.jsonl"), "--model",
                    str(tiny_dir), "--out", str(out), "--backend", "vllm", "--batch-size", "64",
                    "--max-new-tokens", "8"])
    assert rc == 0
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())
    assert len(items) == config["items"] and config["device"] == "vllm"
    assert [c for c in vllm_standin.LLM.calls if c[0] == "generate"][0][1] == 2 * len(items)  # one engine call
