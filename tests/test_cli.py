"""The command line as a user runs it: real subprocesses, real files."""

import json
import subprocess
import sys

import pytest

from .media_files import make_audio, make_image, make_video
from .test_media import _bad_files

pytestmark = pytest.mark.slow


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_make_tiny_then_judge_an_image_with_the_swap_check(tmp_path):
    tiny = tmp_path / "t"
    made = run("rrm.testing", "make-tiny", str(tiny))
    assert made.returncode == 0, made.stderr
    assert (tiny / "config.json").exists() and (tiny / "processor_config.json").exists()
    image = make_image(tmp_path / "some.png")
    result = run("rrm", "judge", "--model", str(tiny), "--query", "What is shown?", "--image", str(image),
                 "--response-a", "a cat", "--response-b", "a dog", "--swap-check", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    judgment = json.loads(result.stdout)
    assert set(judgment) >= {"verdict", "score_a", "score_b", "criteria", "raw", "status", "swap", "timing", "model"}
    assert len(judgment["criteria"]) == 5 and judgment["swap"]["other"]["order"] == "BA"
    assert judgment["timing"]["generated_tokens"] >= 1


def test_stream_writes_the_rationale_to_stderr(tmp_path, tiny_dir, media_dir):
    result = run("rrm", "judge", "--model", str(tiny_dir), "--query", "What is heard?",
                 "--audio", str(media_dir / "tone.wav"), "--response-a", "a tone", "--response-b", "a dog",
                 "--stream", "--max-new-tokens", "16", "--decoding", "static")
    assert result.returncode == 0, result.stderr
    judgment = json.loads(result.stdout)
    # The output was read in text mode, which turns a random model's stray "\r" into "\n".
    assert judgment["raw"] and judgment["raw"].replace("\r\n", "\n").replace("\r", "\n") in result.stderr


def test_pairs_file_with_bad_lines_resumes_without_loss_or_duplicates(tmp_path, tiny_dir):
    data = tmp_path / "data"
    data.mkdir()
    make_image(data / "pic.png")
    make_video(data / "clip.mp4")
    make_audio(data / "talk.wav")
    good = [
        {"id": "t1", "query": "Be kind", "response_a": "Thanks!", "response_b": "No."},
        {"id": "i1", "query": "What is shown?", "image": "pic.png", "response_a": "a disc", "response_b": "a cat"},
        {"id": "v1", "query": "What moves?", "video": "clip.mp4", "response_a": "a bar", "response_b": "a car"},
        {"query": "What is heard?", "audio": "talk.wav", "response_a": "a tone", "response_b": "a song"},
        {"id": "m1", "query": "Missing media", "image": "nope.png", "response_a": "x", "response_b": "y"},
    ]
    lines = [json.dumps(r) for r in good]
    lines.insert(2, '{"id": "broken", "query": "cut off')
    lines.insert(4, json.dumps({"id": "x", "query": "no responses"}))
    lines.append(json.dumps(good[0]))  # a duplicate id
    pairs = data / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "judged.jsonl"
    args = ("rrm", "judge", "--model", str(tiny_dir), "--pairs", str(pairs), "--out", str(out),
            "--max-new-tokens", "6", "--batch-size", "2", "--swap-check")
    first = run(*args)
    assert first.returncode == 1, first.stderr  # some input lines were skipped
    assert "line 3: not valid JSON" in first.stderr and "line 5: missing" in first.stderr
    assert "duplicate id t1" in first.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["sample_id"] for r in rows]
    assert sorted(ids[:3] + ids[4:]) == ["i1", "m1", "t1", "v1"] and len(ids) == 5
    missing = next(r for r in rows if r["sample_id"] == "m1")
    assert not missing["status"]["ok"] and "does not exist" in missing["status"]["errors"][0]
    # A killed run leaves a partial last line: it is dropped and that pair judged again.
    text = out.read_text()
    keep = text.splitlines(keepends=True)[:2]
    out.write_text("".join(keep) + text.splitlines(keepends=True)[2][:25])
    second = run(*args)
    assert "resuming: 2 of 5" in second.stderr and "dropping a partial line" in second.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and len({r["sample_id"] for r in rows}) == 5
    third = run(*args)
    assert "resuming: 5 of 5" in third.stderr and len(out.read_text().splitlines()) == 5


def test_each_bad_media_file_gives_a_one_line_error_and_exit_2(tmp_path, capsys):
    """The first file through a real process; the rest through the same entry point in this one (each process
    spends seconds importing torch)."""
    from rrm.__main__ import main

    for n, (kind, path, part) in enumerate(_bad_files(tmp_path)):
        argv = ["judge", "--model", "unused", "--query", "q", f"--{kind}", str(path), "--response-a", "a",
                "--response-b", "b"]
        if n == 0:
            done = run("rrm", *argv)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        else:
            code = main(argv)
            stdout, stderr = capsys.readouterr()
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert code == 2, (path, stderr)
        assert len(errors) == 1 and part in errors[0] and str(path) in errors[0], stderr
        assert "Traceback" not in stderr and stdout == ""


@pytest.mark.parametrize("args,message", [
    (["--query", "q", "--response-a", "a"], "missing --response-b"),
    (["--query", "q", "--response-a", "a", "--response-b", "b", *["--image", "x.png"] * 5, *["--audio", "y.wav"] * 4],
     "a sample holds at most 8 media items; this one has 9"),
    (["--pairs", "nope.jsonl", "--out", "o.jsonl"], "does not exist"),
    (["--model", "/no/such/dir", "--query", "q", "--response-a", "a", "--response-b", "b"], "does not exist"),
])
def test_bad_arguments_exit_2(tmp_path, args, message):
    result = run("rrm", "judge", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_text_format_and_the_summary_a_file_of_pairs_ends_with(parrot_dir, tmp_path, capsys):
    from rrm.__main__ import main
    from rrm.testing import ASSETS, EXAMPLES, PARROT_A, PARROT_B, PARROT_QUERY

    assert main(["judge", "--model", str(parrot_dir), "--query", PARROT_QUERY, "--image", str(ASSETS / "ball.png"),
                 "--response-a", PARROT_A, "--response-b", PARROT_B, "--swap-check", "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Verdict: B is better (A 2 · B 9)\n") and "Swap check: both orders agree" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("Accuracy and completeness")]
    assert rows == [["Accuracy", "and", "completeness", "1", "10", *"The ball is red and on the grass: only B is "
                     "right.".split()]]
    out = tmp_path / "judged.jsonl"
    for _ in range(2):  # the rerun judges nothing new, and its summary still covers the whole file
        assert main(["judge", "--model", str(parrot_dir), "--pairs", str(EXAMPLES), "--out", str(out),
                     "--swap-check"]) == 0
        summary = capsys.readouterr().err.strip().splitlines()[-1]
        assert summary == ("6 pairs: A better 67 %, B better 33 %, tie 0 %; swap agreement 100 % of 6 checked; "
                           "0 without a verdict")
