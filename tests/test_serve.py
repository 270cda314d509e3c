"""`rrm serve` on the tiny checkpoint, on a loopback port, driven by a real HTTP client (httpx): every route and
modality, streaming, auth, bad requests, 16 concurrent clients, and the dynamic batcher's bookkeeping."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rrm.batching import DynamicBatcher
from rrm.errors import RRMError
from rrm.judge import GenerationSettings, Judge
from rrm.schema import MediaItem, Sample
from rrm.serve import JudgeServer, ServeLimits, running

SETTINGS = GenerationSettings(max_new_tokens=8, min_new_tokens=8)
KEY = "sk-serve-test-0123456789"


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def local(tiny_dir):
    return Judge.from_pretrained(str(tiny_dir), generation=SETTINGS)


def _server(local, batching=True, **kw) -> JudgeServer:
    backend = DynamicBatcher(local.backend, max_batch_rows=32, max_wait_ms=30) if batching else local.backend
    judge = Judge(backend, prompt_format=local.format, rubric=local.rubric, generation=SETTINGS)
    return JudgeServer(judge, "tiny", **kw)


@pytest.fixture(scope="module")
def served(local):
    server = _server(local)
    with running(server) as url:
        yield url, server


def _pairs(media_dir):
    """(request body, the same pair as a Sample with file paths) per modality."""
    red, clip, tone = media_dir / "red.png", media_dir / "clip.mp4", media_dir / "tone.wav"
    return {
        "text": ({"query": "Two plus two?", "response_a": "Four.", "response_b": "Five.", "id": "t"},
                 Sample("Two plus two?", "Four.", "Five.", id="t")),
        "image": ({"query": "What colour?", "response_a": "Red.", "response_b": "Blue.", "id": "i",
                   "media": [{"kind": "image", "data": _b64(red)}]},
                  Sample("What colour?", "Red.", "Blue.", [MediaItem("image", str(red))], id="i")),
        "video": ({"query": "What moves?", "response_a": "A bar.", "response_b": "Nothing.", "id": "v",
                   "media": [{"kind": "video", "data": "data:video/mp4;base64," + _b64(clip), "name": "clip.mp4"}]},
                  Sample("What moves?", "A bar.", "Nothing.", [MediaItem("video", str(clip))], id="v")),
        "audio": ({"query": "What is heard?", "response_a": "A tone.", "response_b": "Speech.", "id": "a",
                   "audio": {"data": _b64(tone), "name": "tone.wav"}},
                  Sample("What is heard?", "A tone.", "Speech.", [MediaItem("audio", str(tone))], id="a")),
    }


@pytest.mark.parametrize("modality", ["text", "image", "video", "audio"])
def test_judge_route_gives_the_in_process_judgment_for_each_modality(served, local, media_dir, modality):
    url, _ = served
    body, sample = _pairs(media_dir)[modality]
    reply = httpx.post(f"{url}/v1/judge", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    got, want = reply.json(), local.judge(sample, swap_check=True)
    assert got["sample_id"] == modality[0] and got["raw"] == want.raw
    assert got["swap"]["other"]["raw"] == want.swap.other.raw  # both orders by default
    assert [c["key"] for c in got["criteria"]] == local.rubric.keys


def test_multipart_uploads_lists_grade_best_of_n_models_and_health(served, local, media_dir):
    url, _ = served
    record = {"query": "What colour?", "response_a": "Red.", "response_b": "Blue.", "image": "red.png"}
    files = {"picture": ("red.png", (media_dir / "red.png").read_bytes(), "image/png")}
    one = httpx.post(f"{url}/v1/judge", data={"request": json.dumps(record)}, files=files, timeout=60)
    assert one.status_code == 200, one.text
    want = local.judge(Sample("What colour?", "Red.", "Blue.", [MediaItem("image", str(media_dir / "red.png"))]),
                       swap_check=True)
    assert one.json()["raw"] == want.raw
    many = httpx.post(f"{url}/v1/judge", json={"pairs": [b for b, _ in _pairs(media_dir).values()],
                                               "swap_check": False}, timeout=60).json()
    assert [j["sample_id"] for j in many] == ["t", "i", "v", "a"] and all(j["swap"] is None for j in many)
    grade = httpx.post(f"{url}/v1/grade", json={"query": "Two plus two?", "response": "Four."}, timeout=60).json()
    assert [c["key"] for c in grade["criteria"]] == local.rubric.keys and grade["raw"]
    ranked = httpx.post(f"{url}/v1/best_of_n", json={"query": "Two plus two?", "responses": ["4", "5", "four"]},
                        timeout=60).json()
    assert ranked["best"] in (0, 1, 2) and len(ranked["matches"]) == 2 and len(ranked["wins"]) == 3
    card = httpx.get(f"{url}/v1/models").json()["data"][0]
    assert card["id"] == "tiny" and card["rrm"]["backend"] == "transformers"
    assert card["rrm"]["prompt_format"] == local.format.name and card["rrm"]["batching"]["max_batch_rows"] == 32
    assert card["rrm"]["media_limits"]["video_max_frames"] == local.limits.video_max_frames
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_stream_sends_partials_then_the_judgment(served, local, media_dir):
    url, _ = served
    body, sample = _pairs(media_dir)["image"]
    with httpx.stream("POST", f"{url}/v1/judge", json={**body, "stream": True}, timeout=60) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = _events(reply.read().decode())
    kinds = [k for k, _ in events]
    assert kinds[-1] == "judgment" and set(kinds[:-1]) == {"partial"} and len(kinds) > 2
    texts = [e["text"] for k, e in events if k == "partial"]
    assert all(a == b[:len(a)] for a, b in zip(texts, texts[1:]))  # the text only grows
    assert events[-1][1]["raw"] == local.judge(sample, swap_check=True).raw


def test_auth_on_and_off(local):
    server = _server(local, batching=False, api_key=KEY)
    pair = {"query": "q", "response_a": "a", "response_b": "b"}
    with running(server) as url:
        assert httpx.post(f"{url}/v1/judge", json=pair).status_code == 401
        wrong = httpx.post(f"{url}/v1/judge", json=pair, headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200  # for load balancers
        good = httpx.post(f"{url}/v1/judge", json=pair, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        assert good.status_code == 200 and KEY not in good.text


def test_bad_requests_get_one_line_json_errors_and_the_server_keeps_serving(local, media_dir, tmp_path):
    from .media_files import make_video

    broken = make_video(tmp_path / "broken.mp4").read_bytes()[:400]
    ok = {"query": "q", "response_a": "a", "response_b": "b"}
    server = _server(local, batching=False, limits=ServeLimits(max_body_bytes=1024**2, max_pairs=3))
    cases = [
        ("/v1/judge", b"{not json", 400, "not valid JSON"),
        ("/v1/judge", b'"a string"', 400, "must be a pair"),
        ("/v1/judge", {**ok, "response_a": ""}, 400, "response_a is empty"),
        ("/v1/judge", {**ok, "image": "/etc/passwd"}, 400, "not among the uploaded files"),
        ("/v1/judge", {**ok, "media": [{"kind": "image", "path": "../../etc/hosts"}]}, 400, "reads no path"),
        ("/v1/judge", {**ok, "media": [{"kind": "image", "data": "https://example.invalid/x.png"}]}, 400,
         "fetches no URL"),
        ("/v1/judge", {**ok, "media": [{"kind": "image", "data": "%%%"}]}, 400, "not valid base64"),
        ("/v1/judge", {**ok, "media": [{"kind": "sound", "data": "AA=="}]}, 400, "must be an object with \"kind\""),
        ("/v1/judge", {**ok, "video": {"data": base64.b64encode(broken).decode()}}, 400, "cannot be decoded"),
        ("/v1/judge", {**ok, "temperature": "hot"}, 400, "\"temperature\" must be a number"),
        ("/v1/judge", {**ok, "max_new_tokens": 0}, 400, "max_new_tokens must be at least 1"),
        ("/v1/judge", {**ok, "temperature": 1.0, "min_p": 1.5}, 400, "min_p must be in [0, 1]"),
        ("/v1/judge", {**ok, "query": "x" * 30_000}, 400, "the query is 30,000 characters long"),
        ("/v1/judge", {"pairs": [ok] * 4}, 400, "the limit is 3 (--max-pairs)"),
        ("/v1/judge", [], 400, "the list of pairs is empty"),
        ("/v1/judge", {"pairs": [ok, ok], "stream": True}, 400, "\"stream\" takes one pair"),
        ("/v1/judge", b"x" * (2 * 1024**2), 413, "over the 1 MB limit"),
        ("/v1/best_of_n", {"query": "q", "responses": ["only one"]}, 400, "at least two responses"),
        ("/v1/grade", {"query": "q", "response": " "}, 400, "the response to grade is empty"),
        ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404,
         "'other' is not served here"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}]}, 400, "fetches no URL"),
        ("/v1/chat/completions", {"messages": "hi"}, 400, "\"messages\" must be a non-empty list"),
        ("/v1/nowhere", ok, 404, "POST /v1/nowhere: Not Found"),
    ]
    with running(server) as url:
        for path, body, status, message in cases:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            reply = httpx.post(f"{url}{path}", content=raw, headers={"Content-Type": "application/json"}, timeout=60)
            assert reply.status_code == status, (path, body if isinstance(body, dict) else body[:40], reply.text)
            error = reply.json()["error"]["message"]
            assert message in error and "\n" not in error and "rrm-serve-" not in error, error
        multipart = httpx.post(f"{url}/v1/judge", files={"f": ("a.png", b"123")})
        assert multipart.status_code == 400 and "needs a \"request\" field" in multipart.json()["error"]["message"]
        assert httpx.get(f"{url}/v1/judge").status_code == 405
        assert httpx.post(f"{url}/v1/judge", json=ok, timeout=60).status_code == 200  # still serving


def test_sixteen_concurrent_clients_all_complete_matched_to_their_requests(local):
    server = _server(local)
    pairs = [{"query": f"Question {i}: is {i} even?", "response_a": f"{i} is even.", "response_b": f"{i} is odd.",
              "id": f"q{i}"} for i in range(16)]
    with running(server) as url, httpx.Client(timeout=120) as client:
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda p: client.post(f"{url}/v1/judge", json=p), pairs))
    assert [r.status_code for r in replies] == [200] * 16
    got = [r.json() for r in replies]
    assert [j["sample_id"] for j in got] == [p["id"] for p in pairs]
    for pair, j in zip(pairs, got):  # each answer is its own pair's, not a neighbour's from the same batch
        want = local.judge(Sample(pair["query"], pair["response_a"], pair["response_b"], id=pair["id"]),
                           swap_check=True)
        assert j["raw"] == want.raw and j["swap"]["other"]["raw"] == want.swap.other.raw
    stats = server.judge.backend.stats
    assert stats.rows == 32 and stats.calls < 16 and stats.largest > 2  # rows of different requests shared calls


def _row(local, text: str):
    sample = Sample(text, "yes", "no")
    return local._rows(sample, [], swap_check=False)[0]


def test_the_batcher_frees_a_cancelled_call_and_fails_only_the_call_at_fault(local):
    from rrm.generation import TransformersBackend

    batcher = DynamicBatcher(local.backend, max_batch_rows=8, max_wait_ms=400)
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(RRMError, match="cancelled"):
        batcher.generate([_row(local, "cancelled soon")], SETTINGS, local.limits, cancel)
    assert time.monotonic() - started < 0.4 and batcher.waiting == 0 and batcher.stats.calls == 0
    # One prompt over the token bound spoils the gathered batch: it is retried call by call.
    strict = DynamicBatcher(TransformersBackend(local.loaded, max_prompt_tokens=3000), max_batch_rows=8,
                            max_wait_ms=200)
    rows = {"short": _row(local, "short"), "long": _row(local, "word " * 3000), "other": _row(local, "other")}
    results = {}

    def call(name):
        try:
            results[name] = strict.generate([rows[name]], SETTINGS, local.limits)[0].text
        except RRMError as e:
            results[name] = e

    threads = [threading.Thread(target=call, args=(n,)) for n in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results["long"], RRMError) and "the prompt is" in str(results["long"])
    assert results["short"] == local.backend.generate([rows["short"]], SETTINGS, local.limits)[0].text
    assert isinstance(results["other"], str) and strict.waiting == 0
