"""The reliability suite: bad inputs, kills and hostile clients, each probed on real parts.

Every test here is one probe: it either gets a clean, one-line refusal, or the work goes on with nothing lost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import zipfile
from pathlib import Path

import pytest

from rrm.__main__ import main as rrm_main
from rrm.eval.run import read_records, run
from train.synth.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
JUNK = [b"\n", b"a note added by hand\n", b"\x00\xff\xfe binary \x01\x02 chunk\n"]


def _corrupt(path: Path, keep: int) -> None:
    """Keep the first `keep` records, with a blank line, a note, a CRLF line and a binary chunk among them, then
    a cut-off copy of the next record, as a kill in the middle of its write leaves it."""
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) > keep
    body = [lines[0], *JUNK, lines[1].rstrip(b"\n") + b"\r\n", *lines[2:keep]]
    path.write_bytes(b"".join(body) + lines[keep][: len(lines[keep]) // 2])


def _ids(path: Path, key: str) -> list[str]:
    records = []
    for raw in path.read_bytes().splitlines():
        try:
            records.append(json.loads(raw))
        except ValueError:
            continue
    return [r[key] for r in records if isinstance(r, dict)]


def _assert_nothing_lost(path: Path, key: str, expected: list[str]) -> None:
    ids = _ids(path, key)
    assert sorted(ids) == sorted(expected)  # every record once: 0 lost, 0 duplicated
    text = path.read_bytes()
    assert all(chunk.strip() in text for chunk in JUNK[1:])  # what could not be read is still there


# ---------------------------------------------------------------- resume never deletes results

def test_cli_resume_keeps_every_judgment_around_unreadable_lines(tiny_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"p{i}", "query": f"Question {i}?", "response_a": "yes",
                                         "response_b": "no"}) + "\n" for i in range(6)))
    out = tmp_path / "out.jsonl"
    argv = ["judge", "--model", str(tiny_dir), "--pairs", str(pairs), "--out", str(out), "--max-new-tokens", "4"]
    assert rrm_main(argv) == 0
    _corrupt(out, keep=4)
    assert rrm_main(argv) == 0
    _assert_nothing_lost(out, "sample_id", [f"p{i}" for i in range(6)])


def test_eval_resume_keeps_every_item_around_unreadable_lines(judge, tmp_path):
    data = str(FIXTURES / "hh_rlhf.jsonl")
    run(judge, "hh-rlhf", data, tmp_path, batch_size=1, progress=False)
    _corrupt(tmp_path / "items.jsonl", keep=2)
    summary = run(judge, "hh-rlhf", data, tmp_path, batch_size=1, progress=False)
    _assert_nothing_lost(tmp_path / "items.jsonl", "id", ["hh-0", "hh-1", "hh-2"])
    assert summary["micro"]["items"] == 3 and len(read_records(tmp_path)) == 3


def test_synth_store_resume_keeps_every_record_around_unreadable_lines(tmp_path):
    path = tmp_path / "generations.jsonl"
    store = Store(path)
    for i in range(5):
        store.append({"id": f"g{i}", "text": f"answer {i}"})
    _corrupt(path, keep=4)
    again = Store(path)
    assert again.done == {"g0", "g1", "g2", "g3"}  # g4 was cut off: it is done again
    again.append({"id": "g4", "text": "answer 4"})
    _assert_nothing_lost(path, "id", [f"g{i}" for i in range(5)])


def test_a_whole_last_line_without_its_newline_is_kept_and_appended_after(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    store = Store(path)
    assert store.done == {"a", "b"}
    store.append({"id": "c"})
    assert path.read_bytes().splitlines() == [b'{"id": "a"}', b'{"id": "b"}', b'{"id": "c"}']


def test_an_output_path_that_is_a_folder_is_one_line(tiny_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "q", "response_a": "a", "response_b": "b"}) + "\n")
    assert rrm_main(["judge", "--model", str(tiny_dir), "--pairs", str(pairs), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path} is a folder; give a file to write the results to"]
    assert rrm_main(["judge", "--model", str(tiny_dir), "--pairs", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: pairs file {tmp_path} is a folder, not a JSONL file"


# ---------------------------------------------------------------- training checkpoints

ASSETS = Path(__file__).parent.parent / "assets"


def _sft_argv(tiny_dir, out, *extra):
    return ["--model", str(tiny_dir), "--data", str(ASSETS / "train_pairs.jsonl"), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--effective_batch_size", "2", "--use_cpu", "true",
            "--report_to", "none", "--save_steps", "1", "--logging_steps", "1", "--video_max_frames", "4",
            "--media_root", str(ASSETS), *extra]


def _logged_steps(checkpoint: Path) -> list[int]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [e["step"] for e in state["log_history"] if "loss" in e]


def test_training_resumes_from_the_newest_complete_checkpoint(tiny_dir, tmp_path, caplog):
    from train.sft import main as sft_main

    out = tmp_path / "run"
    assert sft_main(_sft_argv(tiny_dir, out, "--max_steps", "2")) == 0
    # What a kill while saving leaves: checkpoint-2's state cut off, and a checkpoint-3 begun but empty.
    state = out / "checkpoint-2" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    (out / "checkpoint-3").mkdir()
    assert sft_main(_sft_argv(tiny_dir, out, "--max_steps", "3", "--resume_from_checkpoint", "auto")) == 0
    assert _logged_steps(out / "checkpoint-3") == [1, 2, 3]  # resumed after step 1: the steps run on, once each
    assert (out / "checkpoint-2.incomplete").is_dir() and (out / "checkpoint-3.incomplete").is_dir()
    said = caplog.text
    assert "checkpoint-3 is incomplete (no trainer_state.json)" in said
    assert "checkpoint-2 is incomplete (its trainer_state.json is cut off)" in said


def test_training_killed_for_real_resumes_with_the_steps_in_order(tiny_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "train.sft", *_sft_argv(tiny_dir, out)]
    proc = subprocess.Popen([*argv, "--max_steps", "40"], cwd=ASSETS.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-3").exists():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # while it trains or saves the next checkpoint, whichever it is doing
    proc.wait()
    assert (out / "checkpoint-3").exists()
    done = subprocess.run([*argv, "--max_steps", "6", "--resume_from_checkpoint", "auto"], cwd=ASSETS.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _logged_steps(out / "checkpoint-6") == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- secrets

SECRET = "sk-hardening-0123456789abcdef"


@pytest.fixture
def echoing_server():
    """An OpenAI-compatible endpoint that echoes the caller's Authorization header in its error bodies."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization", "")
            status, message = ((401, f"Invalid API key provided: {auth}") if body["model"] == "locked"
                               else (422, f"Unprocessable request from {auth} (key {auth.split()[-1]})"))
            data = json.dumps({"error": {"message": message}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_a_key_echoed_by_the_server_reaches_no_stream_log_or_file(echoing_server, tmp_path, monkeypatch, capsys,
                                                                 caplog):
    import logging

    from train.synth.__main__ import main as synth_main

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MY_ENDPOINT_CREDS", SECRET)  # a name that does not look secret: registered when read
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "query": f"Question {i}?"}) + "\n" for i in range(3)))

    def recipe(model):
        spec = {"kind": "api", "model": model, "base_url": echoing_server, "api_key_env": "MY_ENDPOINT_CREDS",
                "max_retries": 0, "backoff_s": 0.01}
        path = tmp_path / f"{model}.yaml"
        path.write_text(json.dumps({"prompts": str(prompts), "out": str(tmp_path / "out"), "strong": spec,
                                    "weak": spec}))
        return str(path)

    assert synth_main(["generate", "--config", recipe("echo")]) == 1  # every call refused: left for a rerun
    assert synth_main(["generate", "--config", recipe("locked")]) == 2  # the key refused: the stage stops
    printed = capsys.readouterr()
    written = [p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    everything = "\n".join([printed.out, printed.err, caplog.text, *written])
    assert "Invalid API key provided: Bearer [redacted]" in everything  # the server's words, not the key
    assert "Unprocessable request from Bearer [redacted] (key [redacted])" in everything
    assert SECRET not in everything and "sk-" not in everything and "Bearer s" not in everything


# ---------------------------------------------------------------- the app: model loading is the server's choice

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _error(client, *args, api_name, **kwargs):
    with pytest.raises(Exception) as info:
        client.predict(*args, **kwargs, api_name=api_name)
    return str(info.value)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_dir):
    """The app with an explicit models root that also holds its upload folder and its batch work folders (the
    worst case), a good checkpoint, and an adapter whose base is a path the server does not serve."""
    import app
    from rrm.judge import GenerationSettings, Judge
    from rrm.testing import make_adapter, make_tiny

    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_dir, root / "models" / "good")
    make_adapter(root / "models" / "stray", make_tiny(tmp_path_factory.mktemp("elsewhere") / "base"))
    saved = os.environ.get("GRADIO_TEMP_DIR"), app.WORK_ROOT
    os.environ["GRADIO_TEMP_DIR"], app.WORK_ROOT = str(root / "uploads"), root / "work"
    judge = Judge.from_pretrained(str(root / "models" / "good"),
                                  generation=GenerationSettings(max_new_tokens=4, min_new_tokens=4))
    slot = app.JudgeSlot(judge, models_roots=[root])
    demo = app.build_demo(slot, max_batch_pairs=50)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", slot, root
    demo.close()
    if saved[0] is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = saved[0]
    app.WORK_ROOT = saved[1]


def _upload(url: str, files: dict[str, bytes]) -> list[str]:
    import httpx

    response = httpx.post(url + "gradio_api/upload", files=[("files", (name, data)) for name, data in files.items()])
    response.raise_for_status()
    return response.json()


def test_no_client_can_make_the_server_list_or_load_a_checkpoint_it_planted(served, tmp_path):
    from gradio_client import Client, handle_file

    url, slot, root = served
    client = Client(url, verbose=False)
    evil_rubric = json.dumps({"prompt_format": "omni-rrm", "rubric": {"Obey me": "the attacker's criterion"}})
    config = (root / "models" / "good" / "config.json").read_bytes()
    adapter = json.dumps({"peft_type": "LORA", "base_model_name_or_path": "/etc", "r": 4}).encode()
    # A plain upload of checkpoint files ...
    uploaded = _upload(url, {"config.json": config, "rrm_judge.json": evil_rubric.encode(),
                             "adapter_config.json": adapter})
    assert all(Path(u).resolve().is_relative_to(root / "uploads") for u in uploaded)
    # ... and a batch zip carrying a whole checkpoint folder.
    archive = tmp_path / "media.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/config.json", config)
        z.writestr("evil/rrm_judge.json", evil_rubric)
        z.writestr("evil/adapter_config.json", adapter)
        z.writestr("ball.png", (Path(__file__).parent.parent / "assets" / "ball.png").read_bytes())
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "q", "image": "ball.png", "response_a": "a", "response_b": "b"}) + "\n")
    client.predict(handle_file(str(pairs)), handle_file(str(archive)), False, 1, api_name="/judge_batch")
    listed = slot.checkpoints()
    assert set(listed) == {f"{root.name}/models/good", f"{root.name}/models/stray"}  # neither plant is listed
    for planted in ["uploads", "work", f"{root.name}/uploads", *(str(Path(u).parent) for u in uploaded)]:
        assert "Pick a checkpoint" in _error(client, planted, "none", api_name="/load_model")
    # A listed adapter whose base is a path the server does not serve is refused, in one line.
    refused = _error(client, f"{root.name}/models/stray", "none", api_name="/load_model")
    assert "names its base" in refused and "which this server does not serve" in refused
    assert slot.judge.loaded.name == str(root / "models" / "good") and slot.judge.rubric.keys[0] == "fluency_coherence"


# ---------------------------------------------------------------- the app: bounds, cancels, leftovers, fetches

RUBRIC = {"headers": ["key", "title", "description"], "data": [["relevance", "Relevance", "On topic?"]]}


def _judge_args(query="q", media=None, a="a", b="b", rubric=RUBRIC, tokens=8):
    return dict(query=query, response_a=a, response_b=b, media=media, prompt_format="omni-rrm", swap_check=False,
                max_new_tokens=tokens, video_max_frames=4, audio_max_seconds=10, rubric_table=rubric)


def _pairs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "query": f"Question {i}?", "response_a": "yes",
                                        "response_b": "no"}) + "\n" for i in range(n)))
    return path


def test_every_input_has_a_bound_refused_at_once_in_one_line(served, tmp_path):
    import time

    from gradio_client import Client, handle_file

    url, slot, _ = served
    client = Client(url, verbose=False)
    started = time.monotonic()
    huge_rubric = {**RUBRIC, "data": [["k", "Title", "x" * 1_000_000]]}
    message = _error(client, **_judge_args(rubric=huge_rubric), api_name="/judge")
    assert "Rubric: the rubric is 1,000," in message and "characters long; the limit is 10,000" in message
    assert "/best_of_n takes 11 values, got 10,003" in _error(client, "q", None, False, *["r"] * 10_000,
                                                             api_name="/best_of_n")
    assert "holds 51 pairs; one request may judge 50" in _error(
        client, handle_file(str(_pairs(tmp_path / "many.jsonl", 51))), None, False, 1, api_name="/judge_batch")
    long = "word " * 3_000
    message = _error(client, **_judge_args(query=long, a=long, b=long), api_name="/judge")
    assert "the prompt is" in message and "tokens long; the limit is 16,384 (--max-prompt-tokens raises it)" in message
    assert time.monotonic() - started < 30  # each refused before any generation
    assert slot.judge.judge(__import__("rrm").Sample("q", "a", "b")).timing.generated_tokens == 4  # still serving


def test_a_request_past_its_time_limit_is_stopped_and_frees_the_queue(served, tmp_path, monkeypatch):
    import time

    import app
    from gradio_client import Client, handle_file

    _, slot, _ = served
    judged = []
    real = slot.judge._judge_chunk
    monkeypatch.setattr(slot.judge, "_judge_chunk", lambda chunk, *a: judged.extend(chunk) or real(chunk, *a))
    demo = app.build_demo(slot, max_request_seconds=0.5)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        started = time.monotonic()
        message = _error(client, handle_file(str(_pairs(tmp_path / "pairs.jsonl", 200))), None, True, 1,
                         api_name="/judge_batch")
        assert "Stopped after 0.5 s, the time one request may take (--max-request-seconds)" in message
        assert time.monotonic() - started < 10
        stopped_at = len(judged)
        time.sleep(1.0)
        assert 0 < stopped_at < 200 and len(judged) == stopped_at  # nothing goes on in the background
        assert not any(app.WORK_ROOT.iterdir())  # and its work folder is gone
    finally:
        demo.close()


def test_a_cancelled_batch_stops_within_a_second_and_leaves_nothing_behind(served, tmp_path, monkeypatch):
    import time

    import app
    from gradio_client import Client, handle_file

    url, slot, _ = served
    judged = []
    real = slot.judge._judge_chunk
    monkeypatch.setattr(slot.judge, "_judge_chunk", lambda chunk, *a: judged.extend(chunk) or real(chunk, *a))
    client = Client(url, verbose=False)
    job = client.submit(handle_file(str(_pairs(tmp_path / "pairs.jsonl", 50))), None, True, 1,
                        api_name="/judge_batch")
    deadline = time.monotonic() + 60
    while len(judged) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert judged, "the batch never started"
    job.cancel()
    time.sleep(1.0)
    stopped_at = len(judged)
    time.sleep(1.5)
    assert stopped_at < 50 and len(judged) == stopped_at  # stopped within a second of the cancel
    assert not any(app.WORK_ROOT.iterdir())


def test_a_batch_unpacks_only_the_media_its_pairs_name(tmp_path):
    from rrm.pairs import extract_named

    archive = tmp_path / "media.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ball.png", (Path(__file__).parent.parent / "assets" / "ball.png").read_bytes())
        z.writestr("padding.bin", b"\0" * 50_000_000)  # a bomb of 50 MB that no pair names
        z.writestr("ckpt/config.json", "{}")
        z.writestr("../escape.png", b"x")
    root = tmp_path / "root"
    root.mkdir()
    extract_named(archive, root, {"ball.png"})
    assert [p.relative_to(root).as_posix() for p in root.rglob("*")] == ["ball.png"]


def test_the_app_fetches_no_url_a_client_names(served):
    import threading

    from gradio_client import Client, handle_file

    url, _, _ = served
    connections = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)

    def accept():
        while not stop.is_set():
            try:
                connections.append(listener.accept())
            except OSError:
                continue

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        client = Client(url, verbose=False)
        for target in (f"http://127.0.0.1:{listener.getsockname()[1]}/ball.png", "http://example.invalid/ball.png"):
            media = handle_file(target)
            assert "fetches no URL a client names" in _error(client, **_judge_args(media=media), api_name="/judge")
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert connections == []


# ---------------------------------------------------------------- media and files: valid files read, bad ones named

def _av1_webm(path: Path, frames: int = 40, fps: int = 20) -> Path:
    """An AV1 webm, encoded by SVT-AV1 through PyAV: OpenCV's FFmpeg opens it but decodes no frame."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libsvtav1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            rgb = np.full((64, 96, 3), 30, np.uint8)
            rgb[:, (i * 2) % 84:(i * 2) % 84 + 12] = (240, 200, 40)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _zero_time_scale(mp4: Path) -> Path:
    """The mp4 with its video track's time scale (mdhd) set to 0, as some broken muxers leave it."""
    data = bytearray(mp4.read_bytes())
    at = data.find(b"mdhd") + 4 + 4 + (16 if data[data.find(b"mdhd") + 4] == 1 else 8)
    data[at:at + 4] = bytes(4)
    broken = mp4.with_name("zero_time_scale.mp4")
    broken.write_bytes(bytes(data))
    return broken


def _streamed_wav(wav: Path, size_field: int) -> Path:
    """The WAV with the size fields a writer to a pipe leaves (it cannot seek back to fill them in)."""
    data = bytearray(wav.read_bytes())
    data[4:8] = size_field.to_bytes(4, "little")
    at = data.find(b"data") + 4
    data[at:at + 4] = size_field.to_bytes(4, "little")
    out = wav.with_name(f"streamed_{size_field:x}.wav")
    out.write_bytes(bytes(data))
    return out


def test_unusual_but_valid_media_are_read_and_judged(judge, tmp_path):
    import cv2
    import soundfile as sf
    from PIL import Image

    from rrm import MediaItem, Sample
    from rrm.media import load_audio, load_image, load_video
    from tests.media_files import make_audio, make_video, tone

    assert cv2.VideoCapture(str(_av1_webm(tmp_path / "av1.webm"))).grab() is False  # OpenCV alone fails
    Image.new("RGB", (20_000, 20), (0, 90, 200)).save(tmp_path / "wide.png")
    Image.new("RGB", (20, 20_000), (0, 90, 200)).save(tmp_path / "tall.png")
    for name in ("wide.png", "tall.png"):
        img = load_image(tmp_path / name)
        assert max(img.size) < 200 * min(img.size) and img.width * img.height <= 1024 * 1024  # the processor: < 200
    clip = load_video(tmp_path / "av1.webm")
    assert clip.duration_s == pytest.approx(2.0, abs=0.1) and len(clip.frames) == 4
    assert clip.frames[0].shape == (64, 96, 3)
    broken = load_video(_zero_time_scale(make_video(tmp_path / "good.mp4", frames=40, fps=20)))
    assert broken.duration_s == pytest.approx(2.0, abs=0.1) and len(broken.frames) == 4
    wav = tmp_path / "speech.wav"
    sf.write(wav, tone(2.0, 16_000), 16_000, subtype="PCM_16")
    for field in (0xFFFFFFFF, 0):
        audio = load_audio(_streamed_wav(wav, field))
        assert audio.duration_s == pytest.approx(2.0, abs=0.01)
    make_audio(tmp_path / "cut.wav")
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match="is truncated: its header declares"):
        load_audio(tmp_path / "cut.wav")  # a cut-off file, whose header is no placeholder, is still refused
    for kind, name in (("image", "wide.png"), ("image", "tall.png"), ("video", "av1.webm")):
        media = [MediaItem(kind, str(tmp_path / name))]
        judgment = judge.judge(Sample("What is shown?", "a bar", "a ball", media=media))
        assert judgment.timing.generated_tokens > 0, judgment.status.errors  # the processor took it


def test_pairs_files_bom_binary_long_lines_and_bad_media_entries(tiny_dir, tmp_path, capsys):
    from rrm.pairs import jsonl_rows

    good = [{"id": f"p{i}", "query": f"Question {i}?", "response_a": "yes", "response_b": "no"} for i in range(3)]
    pairs = tmp_path / "pairs.jsonl"
    bad_media = [{**good[0], "id": "m1", "media": [{"kind": "image"}]}, {**good[0], "id": "m2", "media": ["x.png"]},
                 {**good[0], "id": "m3", "image": {"path": "x.png"}}, {**good[0], "id": "m4", "audio": "a\u0000.wav"}]
    pairs.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in good + bad_media).encode())
    out = tmp_path / "out.jsonl"
    argv = ["judge", "--model", str(tiny_dir), "--pairs", str(pairs), "--out", str(out), "--max-new-tokens", "2"]
    assert rrm_main(argv) == 1  # lines were skipped
    assert _ids(out, "sample_id") == ["p0", "p1", "p2"]  # the BOM cost no pair
    err = capsys.readouterr().err
    assert 'line 4: media entry 1 must be an object with "kind" (image, video, audio) and "path"' in err
    assert "line 5: media entry 1 must be" in err and 'line 6: "image" must be a file path or a list' in err
    assert "line 7: a media path holds a NUL character" in err
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(os.urandom(200_000))
    assert rrm_main(["judge", "--model", str(tiny_dir), "--pairs", str(binary), "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: pairs file {binary} is not JSONL text: it holds binary data "
                                               "(NUL bytes)")
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps(good[0]) + "\n" + json.dumps({**good[1], "query": "x" * 5000}) + "\n"
                    + json.dumps(good[2]) + "\n")
    rows = list(jsonl_rows(long, max_line_bytes=1000))
    assert [(n, problem) for n, _, problem in rows] == [
        (1, None), (2, "the line is longer than the 1,000-byte limit on one line"), (3, None)]


def test_a_pair_too_long_to_judge_is_a_failed_judgment_and_is_not_retried(tiny_dir, tmp_path, capsys):
    rows = [{"id": f"p{i}", "query": f"Question {i}?", "response_a": "yes", "response_b": "no"} for i in range(3)]
    rows[1]["response_b"] = "long " * 200_000  # 1 MB
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    argv = ["judge", "--model", str(tiny_dir), "--pairs", str(pairs), "--out", str(out), "--max-new-tokens", "2"]
    assert rrm_main(argv) == 0
    records = {r["sample_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == ["p0", "p1", "p2"]
    assert records["p1"]["verdict"] is None
    assert "the response b is 1,000,000 characters long; the limit is 20,000" in json.dumps(records["p1"])
    capsys.readouterr()
    assert rrm_main(argv) == 0
    assert "resuming: 3 of 3 pairs already in" in capsys.readouterr().err  # the failed pair is not judged again


def test_an_adapter_without_weights_is_one_line_before_anything_loads(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "/nowhere/base", "r": 4}))
    assert rrm_main(["judge", "--model", str(tmp_path / "adapter"), "--query", "q", "--response-a", "a",
                     "--response-b", "b"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the adapter folder {tmp_path / 'adapter'} has no weights: adapter_model.safetensors (or .bin) "
        "is missing beside its adapter_config.json")


def test_gradios_own_refusals_reach_the_client_named(served):
    import httpx
    from gradio_client import Client

    url, _, _ = served
    client = Client(url, verbose=False)
    bad_file = {"foo": 1}
    assert "/judge: a value is not of the kind its input takes" in _error(client, **_judge_args(media=bad_file),
                                                                          api_name="/judge")
    started = httpx.post(url + "gradio_api/call/judge", json={"data": [1, 2]}).json()["event_id"]
    stream = httpx.get(url + f"gradio_api/call/judge/{started}").text
    assert "event: error" in stream and '"error": "/judge takes 17 values, got 2."' in stream
