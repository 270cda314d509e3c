"""The app as its users reach it: a real Gradio server, driven by gradio_client and by headless Chromium."""

import contextlib
import json
import shutil
import socket
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

import app
from rrm.judge import Judge
from rrm.testing import PARROT_A, PARROT_B, PARROT_QUERY, parrot_picture

from .media_files import make_audio, make_av_video, make_image, make_video

RUBRIC = {"headers": ["key", "title", "description"],
          "data": [[c.key, c.title, c.description] for c in __import__("rrm").DEFAULT_RUBRIC.criteria]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_data(tmp_path_factory):
    return tmp_path_factory.mktemp("app-data")


@pytest.fixture(scope="module")
def server(parrot_dir, tiny_dir, app_data):
    # The parrot writes a real judgment for the example pair, and junk for anything else.
    slot = app.JudgeSlot(Judge.from_pretrained(str(parrot_dir)), models_roots=[tiny_dir.parent])
    demo = app.build_demo(slot, max_text_chars=2000, data_dir=app_data)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, max_file_size="1mb",
                theme=app.THEME, css=app.CSS, quiet=True)
    yield f"http://127.0.0.1:{port}/", slot
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def files(media):
    """Upload values for a File that takes several: one path, a list of them, or none."""
    if not media:
        return None
    return [handle_file(str(m)) for m in ([media] if isinstance(media, (str, Path)) else media)]


def judge_args(query="What is shown?", media=None, a="a red ball", b="a cat", fmt="rubric-v2", swap=True, tokens=48,
               **more):
    """/judge's parameters by name; the ones left out take the defaults the API lists."""
    return {"query": query, "response_a": a, "response_b": b, "media": files(media),
            "prompt_format": fmt, "swap_check": swap, "temperature": 0.0, "max_new_tokens": tokens, "video_fps": 2,
            "video_max_frames": 16, "audio_max_seconds": 30, "rubric_table": RUBRIC, **more}


def test_judge_streams_updates_then_the_final_judgment(client, media_dir):
    job = client.submit(**judge_args(media=media_dir / "red.png"), api_name="/judge")
    updates = list(job)
    final = job.result()
    assert len(job.outputs()) >= 2 and len(updates) >= 1  # partial updates go at most 4 a second
    verdict_html, criteria_html, chart_html, timing_md, orders_html, raw, judgment = final
    assert 'data-done="True"' in verdict_html
    assert criteria_html.count('class="criterion') == 5
    assert judgment["raw"] == raw and len(judgment["criteria"]) == 5
    assert judgment["swap"]["other"]["order"] == "BA" and "tokens/s" in timing_md
    assert "Order A, B (as given)" in orders_html and "Order B, A (mapped back" in orders_html
    assert orders_html.count('class="criterion') == 10  # both orders' panels, side by side
    # Partial updates first; a card unchanged since the last update is skipped (it reaches the client as no string).
    cards = [out[0] for out in job.outputs()[:-1]]
    assert cards and all('data-done="False"' in c for c in cards if isinstance(c, str)) and isinstance(cards[0], str)


def test_every_example_on_the_page_gets_a_valid_judgment_with_the_right_verdict(client):
    from rrm.testing import examples

    for (query, media, a, b), (_, teacher) in zip(app._examples(), examples()):
        judgment = client.predict(**judge_args(query, media, a, b, tokens=600), api_name="/judge")[-1]
        assert judgment["status"]["ok"] and judgment["swap"]["agree"], (query, judgment["raw"][:200])
        assert judgment["verdict"] == teacher.verdict, query


@pytest.mark.parametrize("modality", ["text", "image", "video", "audio"])
def test_each_modality(client, media_dir, modality):
    media = {"text": None, "image": media_dir / "red.png", "video": media_dir / "clip.mp4",
             "audio": media_dir / "tone.wav"}[modality]
    judgment = client.predict(**judge_args(media=media, tokens=24), api_name="/judge")[-1]
    assert judgment["timing"]["generated_tokens"] >= 1 and judgment["model"]


def test_a_video_with_sound_and_an_image_plus_audio_are_judged_with_what_was_heard(client, media_dir, tmp_path):
    clip = make_av_video(tmp_path / "talk.mp4", seconds=2.0, sound_seconds=2.0)
    card, *_, judgment = client.predict(**judge_args(media=[clip], tokens=8, swap=False, video_audio="on"),
                                        api_name="/judge")
    [heard] = judgment["heard"]
    assert heard["video"] == "talk.mp4" and 1.8 <= heard["audio_s"] <= 2.1
    assert "Heard: talk.mp4: " in card and " s of sound" in card
    card, *_, judgment = client.predict(**judge_args(media=[clip], tokens=8, swap=False, video_audio="off"),
                                        api_name="/judge")
    assert judgment["heard"][0]["audio_s"] is None and "sound off" in card
    # An image plus a separate audio clip (AVQA's shape): both reach the judge, in order; no video, nothing heard.
    both = [media_dir / "red.png", media_dir / "tone.wav"]
    *_, judgment = client.predict(**judge_args(media=both, tokens=8, swap=False), api_name="/judge")
    assert judgment["timing"]["generated_tokens"] >= 1 and judgment["heard"] == []
    ranking, *_ = client.predict(query="Which fits?", response_1="a tone", response_2="silence", media=files(both),
                                 swap_check=False, api_name="/best_of_n")
    assert ranking.count("<tr") == 3
    many = [media_dir / "red.png"] * 9
    assert "A sample holds at most 8 media items; this one has 9." in _error(
        client, **judge_args(media=many, tokens=8))
    assert "'loud'" in (refused := _error(client, **judge_args(tokens=8, video_audio="loud"))) and "'off'" in refused


def test_swap_check_off(client):
    judgment = client.predict(**judge_args(query="Be kind", swap=False, tokens=16), api_name="/judge")[-1]
    assert judgment["swap"] is None
    assert 'swap check off' in client.predict(**judge_args(query="Be kind", swap=False, tokens=16),
                                              api_name="/judge")[0]


def test_custom_rubric_from_the_editor(client):
    rubric = {"headers": ["key", "title", "description"], "data": [["humour", "Humour", "Is it funny?"]]}
    out = client.predict(**judge_args(query="Tell a joke", fmt="rubric-v2", tokens=16, rubric_table=rubric),
                         api_name="/judge")
    assert out[1].count('class="criterion') == 1 and 'data-key="humour"' in out[1]
    assert [c["key"] for c in out[-1]["criteria"]] == ["humour"]


def _error(client, *args, api_name="/judge", **kwargs):
    with pytest.raises(Exception) as info:
        client.predict(*args, **kwargs, api_name=api_name)
    return str(info.value)


def test_bad_inputs_give_a_message_and_the_app_keeps_serving(client, tmp_path, media_dir):
    corrupt = tmp_path / "photo.png"
    corrupt.write_text("not an image at all")
    message = _error(client, **judge_args(media=corrupt))
    assert "image file photo.png cannot be decoded" in message and "/tmp/" not in message
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    assert "Invalid file type" in _error(client, **judge_args(media=odd))  # refused at upload
    assert "Response A is empty" in _error(client, **judge_args(a="  "))
    assert "characters long" in _error(client, **judge_args(b="x" * 2001))
    big = tmp_path / "big.wav"
    make_audio(big, seconds=40, rate=16000, channels=1)  # 1.3 MB, over the 1 MB upload limit
    assert "exceeds the maximum file size of 1048576 bytes" in _error(client, **judge_args(media=big))
    empty = {"headers": ["key", "title", "description"], "data": []}
    assert "Rubric" in _error(client, **judge_args(rubric_table=empty))
    # Still serving.
    assert client.predict(**judge_args(tokens=8), api_name="/judge")[-1]["timing"]["generated_tokens"] >= 1


def test_four_concurrent_requests_all_complete(server, media_dir):
    url = server[0]

    def one(i):
        return Client(url, verbose=False).predict(**judge_args(query=f"Request {i}", tokens=16), api_name="/judge")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert len(results) == 4 and all(r[-1]["timing"]["generated_tokens"] >= 1 for r in results)


def test_batch_with_a_media_zip_broken_lines_and_escaping_paths(client, tmp_path):
    media = tmp_path / "m"
    (media / "pics").mkdir(parents=True)
    make_image(media / "pics" / "p.png")
    make_video(media / "c.mp4")
    make_audio(media / "s.wav")
    archive = tmp_path / "media.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in media.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(media))
    rows = [
        {"id": "t", "query": "Be kind", "response_a": "Thanks", "response_b": "No"},
        {"id": "i", "query": "What?", "image": "pics/p.png", "response_a": "disc", "response_b": "cat"},
        {"id": "v", "query": "What?", "video": "c.mp4", "response_a": "bar", "response_b": "car"},
        {"id": "a", "query": "What?", "audio": "s.wav", "response_a": "tone", "response_b": "song"},
        {"id": "escape", "query": "What?", "image": "../../etc/passwd", "response_a": "x", "response_b": "y"},
        {"id": "absolute", "query": "What?", "image": "/etc/hostname", "response_a": "x", "response_b": "y"},
        {"id": "gone", "query": "What?", "image": "pics/none.png", "response_a": "x", "response_b": "y"},
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"id": "cut", "query": "tru\n')
    summary_md, table, files, summary = client.predict(handle_file(str(pairs)), handle_file(str(archive)), True, 2,
                                                       api_name="/judge_batch")
    assert summary["pairs"] == 4 and summary["skipped_lines"] == 3 and summary["swap_checked"] <= 4
    assert "leads outside the uploaded files" in summary_md and "not valid JSON" in summary_md
    # A file the zip lacks sets its pair aside, named as the pairs file names it, apart from the judgments.
    assert summary["missing_media"] == 1 and summary["parse_failures"] <= 4
    assert "- pair gone names image pics/none.png: upload a zip holding it" in summary_md
    assert "rrm-batch" not in summary_md and "/tmp" not in summary_md
    assert table["headers"] == ["id", "query", "response A", "response B", "verdict", "A", "B", "swap", "status"]
    assert [r[:4] for r in table["data"]] == [["t", "Be kind", "Thanks", "No"], ["i", "What?", "disc", "cat"],
                                             ["v", "What?", "bar", "car"], ["a", "What?", "tone", "song"]]
    assert all(r[7] in ("agree", "disagree", "incomplete") for r in table["data"])
    by_name = {Path(f).suffix: Path(f) for f in files}
    lines = by_name[".jsonl"].read_text().splitlines()
    assert [json.loads(line)["sample_id"] for line in lines] == ["t", "i", "v", "a"]
    with open(by_name[".csv"], newline="") as f:
        csv_rows = list(__import__("csv").DictReader(f))
    assert {"fluency_coherence", "relevance", "safety_ethics"} <= set(csv_rows[0])
    assert [(r["id"], r["query"], r["response_a"], r["media"]) for r in csv_rows[1:3]] == [
        ("i", "What?", "disc", "image p.png"), ("v", "What?", "bar", "video c.mp4")]
    # Without the zip, the pairs that need none are judged and the others set aside, each saying what to upload.
    summary_md, table, _, summary = client.predict(handle_file(str(pairs)), None, False, 2, api_name="/judge_batch")
    assert summary["pairs"] == 1 and summary["missing_media"] == 4 and [r[0] for r in table["data"]] == ["t"]
    assert "pair v names video c.mp4: upload a zip holding it" in summary_md


def test_batch_with_no_readable_line_says_so(client, tmp_path):
    pairs = tmp_path / "bad.jsonl"
    pairs.write_text("{not json\n")
    assert "No readable pairs" in _error(client, handle_file(str(pairs)), None, False, 2, api_name="/judge_batch")
    junk = tmp_path / "media.zip"
    junk.write_text("not a zip")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"query": "q", "response_a": "a", "response_b": "b"}) + "\n")
    assert "not a valid zip" in _error(client, handle_file(str(good)), handle_file(str(junk)), False, 2,
                                       api_name="/judge_batch")


def test_best_of_n_ranks_by_name_the_boxes_in_use_with_each_match_explained(client, media_dir):
    ranking, matches, rationales, payload = client.predict(
        query="What is shown?", response_1="a red ball", response_2="", response_3="a blue cube",
        response_4="a green tree",
        media=files(media_dir / "red.png"), swap_check=False, api_name="/best_of_n")
    assert ranking.count('class="best"') == 1 and ranking.count("<tr") == 4 and "mean score" in ranking
    # Box 2 was left empty: the matches name the boxes as the page numbers them.
    first, second = (row[1:3] for row in matches["data"])
    assert first == [1, 3] and second[0] in (1, 3) and second[1] == 4
    assert rationales.count("<details>") == 2 and "Match 2: response" in rationales
    assert all(row[4:6] == ["–", "–"] for row in matches["data"] if row[3] == "no verdict")  # no verdict, no scores
    assert sorted(payload["ranking"]) == [0, 2, 3] and payload["ranking"][0] == payload["best"]
    assert [w is None for w in payload["wins"]] == [False, True, False, False, True, True, True, True]
    assert "between 2 and 8" in _error(client, query="q", response_1="only one", response_2="",
                                       api_name="/best_of_n")


def test_model_tab_loads_another_checkpoint_from_the_list(client, server, tiny_dir):
    url, slot = server
    other = slot.roots[0] / "second"
    if not other.exists():
        shutil.copytree(tiny_dir, other)
    label = f"{slot.roots[0].name}/second"
    assert label in slot.checkpoints()
    before = slot.judge
    try:
        info, _, fmt, limits = client.predict(label, "none", api_name="/load_model")
        assert "second" in info and slot.judge.loaded.name.endswith("second") and fmt == "omni-rrm-release"
        lim = slot.judge.limits  # the upload box states the loaded judge's bounds
        assert f"at most {lim.video_max_frames} frames" in limits and f"{lim.video_fps:g} fps" in limits
        assert "| decoding | plain: no GPU (cpu) |" in info
        assert "Pick a checkpoint" in _error(client, "/etc", "none", api_name="/load_model")
    finally:
        slot.judge = before  # the other tests talk to the parrot


def test_browser_upload_judge_and_screenshot(server, media_dir, tmp_path, caplog):
    """...and the page keeps up with the stream: the final verdict shows within 1 s of the server having it
    ready (the server's log record, just before it hands the update to Gradio, against the page's clock)."""
    import logging

    caplog.set_level(logging.INFO, logger="rrm.app")

    with _page() as page:
        _fill_the_ball_pair(page, server[0], tmp_path)
        page.evaluate("""() => { window.doneAt = null; new MutationObserver(() => {
            if (!window.doneAt && document.querySelector('#verdict .verdict-card[data-done="True"]'))
                window.doneAt = Date.now(); }).observe(document.body, {subtree: true, childList: true,
                                                                         attributes: true, characterData: true}); }""")
        page.locator("#judge-button").click()
        page.locator('#verdict .verdict-card[data-done="True"]').wait_for(timeout=120_000)
        [sent] = [r.created for r in caplog.records if r.getMessage().startswith("judgment ready to send")]
        lag = page.evaluate("window.doneAt") / 1000 - sent
        print(f"page lag behind the stream: the final verdict showed {lag:.2f} s after the server had it ready")
        assert lag < 1.0
        assert page.locator('#verdict .verdict-card').get_attribute("data-verdict") == "B"
        assert page.locator("#criteria .criterion.done").count() == 5  # every panel filled in
        assert "both orders agree" in page.locator("#verdict").inner_text()
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)
        # The examples sit with the inputs, above the options and the verdict.
        examples = page.get_by_text("Examples (text, image, video, audio, a video with sound)")
        examples_top = examples.first.bounding_box()["y"]
        assert examples_top < page.locator("#verdict").bounding_box()["y"]
        # An input error leaves no stale verdict: the card, panels and chart start over.
        page.locator("#response-b textarea").fill("")
        page.locator("#judge-button").click()
        page.get_by_text("Response B is empty.").first.wait_for(timeout=30_000)
        page.locator('#verdict .verdict-card[data-done="False"]').wait_for(timeout=30_000)
        assert "No judgment yet" in page.locator("#verdict").inner_text()
        assert page.locator("#criteria .criterion.done").count() == 0 and "No scores yet." in page.content()
    assert shot.stat().st_size > 10_000


def _fill_the_ball_pair(page, url, folder):
    """Open the app and fill in the pair the parrot judges right (B is better), uploading its picture."""
    page.goto(url)
    page.get_by_label("Query").first.fill(PARROT_QUERY)
    picture = folder / "ball.png"
    parrot_picture().save(picture)
    page.locator("#media input[type=file]").set_input_files(str(picture))
    page.locator("#response-a textarea").fill(PARROT_A)
    page.locator("#response-b textarea").fill(PARROT_B)


@contextlib.contextmanager
def _page(url: str | None = None, height: int = 1600):
    """A page in headless Chromium (opened at `url` when given), closed however the test ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            if url:
                page.goto(url)
            yield page
        finally:
            browser.close()


def _browser(p):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    return p.chromium.launch(executable_path=chromium, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


def test_judge_stop_judge_twenty_times_in_the_browser(server, tiny_dir):
    """Each Stop ends its judgment at once and the card says so; the next Judge runs as if nothing happened."""
    import time

    from rrm.judge import GenerationSettings

    _, slot = server
    before = slot.judge  # a judge that writes 1,024 junk tokens (several seconds): there is time to stop it
    slot.judge = Judge.from_pretrained(str(tiny_dir), generation=GenerationSettings(min_new_tokens=1024,
                                                                                   judgment_start_tokens=None))
    try:
        with _page(server[0], height=1400) as page:
            page.get_by_label("Query").first.fill("Tell a joke")
            page.locator("#response-a textarea").fill("a red ball")
            page.locator("#response-b textarea").fill("a cat")
            # With the Raw output open, the raw text streams too (closed, it comes only with the end).
            page.get_by_role("button", name="Raw output").click()
            page.locator("#judge-button").click()
            page.get_by_text("Judging…").first.wait_for(timeout=30_000)
            page.wait_for_function("() => document.querySelector('#raw textarea').value.length > 0", timeout=30_000)
            assert page.locator('#verdict .verdict-card[data-done="False"]').count() == 1  # still judging
            page.get_by_role("button", name="Stop").click()
            page.locator('#verdict .verdict-card[data-done="True"]').wait_for(timeout=10_000)
            page.get_by_role("button", name="Raw output").click()
            waits = []
            for _ in range(20):
                page.locator("#judge-button").click()
                page.get_by_text("Judging…").first.wait_for(timeout=30_000)
                clicked = time.perf_counter()
                page.get_by_role("button", name="Stop").click()
                card = page.locator('#verdict .verdict-card[data-done="True"]')
                card.wait_for(timeout=10_000)
                waits.append(time.perf_counter() - clicked)
                text = card.inner_text()
                assert text.startswith("Stopped after ") and int(text.split()[2]) < 1024, text
    finally:
        slot.judge = before
    print(f"Stop to 'Stopped' card: median {sorted(waits)[10]:.2f} s, slowest {max(waits):.2f} s over 20")
    assert max(waits) < 3.0


def test_a_card_without_a_verdict_shows_no_scores_and_says_why_it_stopped():
    from rrm.schema import Judgment, ParseStatus

    early = ("stopped after 96 tokens: no judgment had begun (no JSON object opened), so the rest would have been "
             "junk too")
    status = ParseStatus(False, "rubric-v2", ["no JSON judgment found", f"AB: {early}"])
    stopped = Judgment(None, 3, 8, [], "zzz", status)
    card = app.render_verdict(stopped)
    assert f"No verdict: {early}" in card and "A: –" in card and "B: –" in card and "AB:" not in card
    unread = app.render_verdict(Judgment(None, 3, None, [], "{", ParseStatus(False, "rubric-v2", ["bad JSON"])))
    assert "No verdict: the output could not be read" in unread and "A: –" in unread


def test_a_vote_goes_to_the_votes_file_once_and_is_about_the_last_judgment(client, server, app_data):
    fresh = Client(server[0], verbose=False)
    assert "Judge a pair first" in _error(fresh, "A", api_name="/vote")
    before = len(app.VoteBook(app_data).records())
    *_, judgment = client.predict(**judge_args(a="a dog", b="a fish", tokens=16), api_name="/judge")
    assert "Your vote: **Tie**" in client.predict("tie", api_name="/vote")
    assert "has a vote already" in _error(client, "A", api_name="/vote")
    assert "'C' (type: <class 'str'>) is not in the list of choices" in _error(fresh, "C", api_name="/vote")
    records = app.VoteBook(app_data).records()
    assert len(records) == before + 1 and records[-1]["response_a"] == "a dog"
    assert records[-1]["judgment"] == judgment and records[-1]["format"] == "rubric-v2"
    summary, *_ = client.predict(api_name="/votes")
    assert f"**{before + 1} vote" in summary


def test_votes_in_the_browser_train_an_adapter_that_the_model_tab_loads(server, app_data, tiny_dir, tmp_path):
    """Judge, vote, undo, vote again, read the Votes tab; train.sft on the file; load the adapter in the Model tab."""
    from train.sft import main as sft_main

    url, slot = server
    before = slot.judge
    try:
        with _page() as page:
            _fill_the_ball_pair(page, url, tmp_path)
            assert page.locator("#vote-B").is_disabled()  # nothing to vote on yet
            page.locator("#judge-button").click()
            assert page.locator("#vote-B").is_disabled()  # nor while the judge writes
            page.locator('#verdict .verdict-card[data-done="True"]').wait_for(timeout=120_000)
            page.locator("#vote-A:not([disabled])").wait_for(timeout=10_000)
            page.locator("#vote-A").click()
            page.get_by_text("the judge disagrees").wait_for(timeout=10_000)
            assert page.locator("#vote-B").is_disabled() and page.locator("#vote-undo").is_enabled()
            page.locator("#vote-undo").click()
            page.locator("#vote-B:not([disabled])").wait_for(timeout=10_000)
            page.locator("#vote-B").click()
            page.get_by_text("the judge agrees").wait_for(timeout=10_000)
            records = app.VoteBook(app_data).records()
            assert records[-1]["vote"] == "B" and all(r["vote"] != "A" for r in records)  # the undone one went
            page.get_by_role("tab", name="Votes").click()
            page.get_by_text("The judge agrees with you on").wait_for(timeout=10_000)
            assert "image" in page.locator(".chart").last.inner_text()
            page.screenshot(path=str(tmp_path / "votes.png"), full_page=True)
            out = slot.roots[0] / "voted"
            assert sft_main(["--model", str(slot.judge.loaded.name), "--data", str(app_data / "votes.jsonl"),
                             "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "1",
                             "--effective_batch_size", "1", "--use_cpu", "true", "--report_to", "none"]) == 0
            page.get_by_role("tab", name="Model").click()
            page.get_by_role("button", name="Rescan").click()
            choice = page.get_by_label("Checkpoint or adapter under the models folders")
            choice.fill(f"{slot.roots[0].name}/voted")
            choice.press("Enter")
            page.get_by_role("button", name="Load").click()
            page.get_by_text(f"{out}").first.wait_for(timeout=60_000)
        assert slot.judge.loaded.adapter == str(out)
    finally:
        slot.judge = before


def test_reference_top_p_seed_and_a_template_reach_the_judge_and_a_bad_template_is_refused(client, app_data):
    template = "Question: ${question}\nFirst: ${answer_a}\nSecond: ${answer_b}\nKnown good: ${reference}"
    client.predict(**judge_args(tokens=8, swap=False, reference="a red ball", temperature=0.7, top_p=0.5, seed=7,
                                prompt_template=template), api_name="/judge")
    client.predict("both_bad", api_name="/vote")
    voted = app.VoteBook(app_data).records()[-1]
    assert (voted["reference"], voted["seed"], voted["top_p"], voted["temperature"]) == ("a red ball", 7, 0.5, 0.7)
    assert voted["format"] == "template:in Options" and voted["label"] == "tie"
    message = _error(client, **judge_args(prompt_template="Judge ${question} only"))
    assert "Prompt template: prompt template in Options lacks ${answer_a}" in message


def test_the_page_controls_upload_check_swap_clear_history_and_more_boxes(server, tmp_path):
    corrupt = tmp_path / "photo.png"
    corrupt.write_text("not an image at all")
    with _page(server[0]) as page:
        page.locator("#media input[type=file]").set_input_files(str(corrupt))
        page.get_by_text("image file photo.png cannot be decoded").first.wait_for(timeout=30_000)
        assert "The upload was removed." in page.content()
        page.wait_for_function("() => !document.querySelector('#media').innerText.includes('photo.png')",
                               timeout=10_000)
        page.locator("#response-a textarea").fill("first")
        page.locator("#response-b textarea").fill("second")
        page.locator("#swap-button").click()
        page.wait_for_function("() => document.querySelector('#response-a textarea').value === 'second'",
                               timeout=10_000)
        assert page.locator("#response-b textarea").input_value() == "first"
        _fill_the_ball_pair(page, server[0], tmp_path)
        page.locator("#judge-button").click()
        page.locator('#verdict .verdict-card[data-done="True"]').wait_for(timeout=120_000)
        page.get_by_text("History: the judgments made on this page").click()
        page.locator("#history input").wait_for(timeout=10_000)
        page.wait_for_function("() => document.querySelector('#history input').value.includes('B is better')",
                               timeout=10_000)
        page.locator("#clear-button").click()
        page.locator('#verdict .verdict-card[data-done="False"]').wait_for(timeout=10_000)
        page.wait_for_function("() => document.querySelector('#response-a textarea').value === ''", timeout=10_000)
        page.get_by_role("button", name="Open").click()
        page.locator('#verdict .verdict-card[data-verdict="B"][data-done="True"]').wait_for(timeout=10_000)
        assert page.locator("#vote-B").is_enabled()  # a re-opened judgment can be voted on
        page.get_by_role("button", name="Export all as JSON").click()
        page.locator('#history-file [aria-label="judgments.json"]').wait_for(timeout=10_000)
        with page.expect_download() as download:
            page.locator("#history-file a[download]").click()
        [entry] = json.loads(Path(download.value.path()).read_text())
        assert entry["judgment"]["verdict"] == "B" and entry["sample"]["query"] == PARROT_QUERY
        page.get_by_role("tab", name="Best-of-N").click()
        assert not page.locator("#bon-response-3").is_visible()
        page.get_by_role("button", name="Add a response (up to 8)").click()
        page.locator("#bon-response-3").wait_for(state="visible", timeout=10_000)
        assert not page.locator("#bon-response-4").is_visible()


def test_several_uploads_show_in_order_with_previews_and_the_limits_and_a_bad_one_alone_is_removed(server, tmp_path):
    picture, clip, sound = make_image(tmp_path / "before.png"), make_av_video(tmp_path / "talk.mp4"), \
        make_audio(tmp_path / "narration.wav")
    corrupt = tmp_path / "broken.png"
    corrupt.write_text("not an image at all")
    with _page(server[0]) as page:
        assert "Up to 8 files per sample" in page.locator("#media-limits").inner_text()
        page.locator("#media input[type=file]").set_input_files([str(picture), str(corrupt), str(clip), str(sound)])
        page.get_by_text("broken.png: image file broken.png cannot be decoded").first.wait_for(timeout=30_000)
        names = page.locator("#media-names")
        page.wait_for_function("() => document.querySelector('#media-names').innerText.includes('3. narration')",
                               timeout=10_000)
        assert names.inner_text().strip() == ("In order: 1. before.png (image) · 2. talk.mp4 (video) · "
                                            "3. narration.wav (audio)")
        page.locator("#media-gallery img").first.wait_for(timeout=10_000)
        assert page.locator("#media-gallery video").count() >= 1  # the video previews beside the image
        assert page.locator("audio").count() >= 1


def test_every_endpoint_names_its_parameters_and_outputs_and_marks_the_optional_ones(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/judge", "/vote", "/votes", "/judge_batch", "/best_of_n", "/load_model"}
    required = {name: [p["parameter_name"] for p in e["parameters"] if not p["parameter_has_default"]]
                for name, e in endpoints.items()}
    assert required == {"/judge": ["response_a", "response_b"], "/vote": ["vote"], "/votes": [],
                        "/judge_batch": ["pairs_file"], "/best_of_n": ["response_1", "response_2"], "/load_model": []}
    for name, e in endpoints.items():
        assert not [p for p in e["parameters"] if p["parameter_name"].startswith("param_")], name
        assert e["returns"] and not [r for r in e["returns"] if r["label"].startswith("value_")], name
    assert [p["parameter_name"] for p in endpoints["/judge"]["parameters"]][-3:] == [
        "rubric_table", "prompt_template", "video_audio"]  # added at the end: positional callers keep working
    assert [p["parameter_name"] for p in endpoints["/best_of_n"]["parameters"]] == [
        "query", *(f"response_{i}" for i in range(1, 9)), "media", "swap_check"]


def test_two_votes_at_once_on_one_judgment_keep_one(client, app_data):
    client.predict(**judge_args(a="a lamp", b="a chair", tokens=8, swap=False), api_name="/judge")
    before = len(app.VoteBook(app_data).records())

    def vote(v):
        try:
            return client.predict(v, api_name="/vote")
        except Exception as e:  # the one that came second
            return str(e)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(vote, ["A", "B"]))
    assert sum("Your vote:" in a for a in answers) == 1 and sum("has a vote already" in a for a in answers) == 1
    assert len(app.VoteBook(app_data).records()) == before + 1
