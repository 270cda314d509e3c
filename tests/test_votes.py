"""The votes file: what a vote keeps, undo, several writers at once, and the judge's agreement with its users."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from rrm import RRMError
from rrm.schema import CriterionResult, Judgment, MediaItem, ParseStatus, Sample, SwapCheck
from rrm.votes import NO_VERDICT, VoteBook, vote_stats
from train.data import load_pairs

from .media_files import make_audio, make_image

ABOUT = {"model": "tiny", "quantization": "none", "format": "rubric-v2", "seed": 0, "temperature": 0.0,
         "rubric": ["relevance"]}


def _judgment(verdict, agree=True):
    criteria = [CriterionResult("relevance", "Relevance", f"{verdict} answers the question", 8, 3)]
    return Judgment(verdict, 8, 3, criteria, "{...}", ParseStatus(verdict is not None, "rubric-v2"),
                    swap=SwapCheck(agree, verdict, verdict if agree else "B"))


def test_a_vote_is_a_training_pair_with_its_media_kept_by_content(tmp_path):
    (tmp_path / "upload").mkdir()
    upload = make_image(tmp_path / "upload" / "Ball.PNG")
    book = VoteBook(tmp_path / "data")
    sample = Sample("What is shown?", "a red ball", "a cat", media=[MediaItem("image", str(upload))])
    agreed = book.cast(sample, _judgment("A"), "A", ABOUT)
    disputed = book.cast(sample, _judgment("A"), "B", ABOUT)
    both_bad = book.cast(sample, _judgment("tie"), "both_bad", ABOUT)
    upload.unlink()  # the upload folder is cleaned: the votes keep their own copy
    [stored] = (tmp_path / "data" / "media").iterdir()
    assert agreed["media"] == [{"kind": "image", "path": f"media/{stored.name}"}] and stored.suffix == ".png"
    assert (agreed["split"], agreed["criteria"]["relevance"]["rationale"]) == ("sft", "A answers the question")
    assert (disputed["split"], disputed["label"], disputed["criteria"]) == ("rl", "B", {})
    assert (both_bad["label"], both_bad["split"]) == ("tie", "sft")  # both bad is a tie, and the judge said tie
    assert agreed["judgment"]["verdict"] == "A" and agreed["model"] == "tiny" and agreed["seed"] == 0
    pairs, report = load_pairs(book.path, splits=("sft",))  # train/'s own loader reads the file as it is
    assert report.kept == 2 and pairs[0].sample.media[0].path == str(stored)
    rl, _ = load_pairs(book.path, splits=("rl",))
    assert [p.label for p in rl] == ["B"]


def test_undo_takes_out_only_that_vote_and_keeps_lines_it_cannot_read(tmp_path):
    book = VoteBook(tmp_path)
    sample = Sample("Which is heavier?", "a kilo of iron", "a gram of feathers")
    first = book.cast(sample, _judgment("A"), "A", ABOUT)
    with open(book.path, "a") as f:
        f.write("a note added by hand\n")
    second = book.cast(sample, _judgment("A"), "tie", ABOUT)
    assert book.count() == 2
    assert book.undo(first["id"]) and not book.undo(first["id"])
    assert book.count() == 1 and VoteBook(tmp_path).count() == 1  # kept by undo, and read afresh the same
    lines = book.path.read_text().splitlines()
    assert lines[0] == "a note added by hand" and json.loads(lines[1])["id"] == second["id"]
    assert [r["id"] for r in book.records()] == [second["id"]]


def test_votes_from_many_threads_are_all_whole_lines(tmp_path):
    audio = make_audio(tmp_path / "tone.wav")
    book = VoteBook(tmp_path / "data")
    sample = Sample("What is heard?", "a tone", "speech", media=[MediaItem("audio", str(audio))])
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: book.cast(sample, _judgment("A"), "AB"[i % 2], ABOUT)["id"], range(64)))
    records = [json.loads(x) for x in book.path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert len(list((tmp_path / "data" / "media").iterdir())) == 1  # one copy of the same file


def test_a_bad_vote_or_media_without_a_file_is_refused(tmp_path):
    book = VoteBook(tmp_path)
    with pytest.raises(RRMError, match="unknown vote 'C'"):
        book.cast(Sample("q", "a", "b"), _judgment("A"), "C", ABOUT)
    with pytest.raises(RRMError, match="keeps its media by file"):
        book.cast(Sample("q", "a", "b", media=[MediaItem("image", str(tmp_path / "gone.png"))]), _judgment("A"),
                  "A", ABOUT)
    assert not book.path.exists()


def test_agreement_overall_per_modality_per_swap_outcome_and_the_confusion_table(tmp_path):
    image = make_image(tmp_path / "x.png")
    book = VoteBook(tmp_path / "data")
    text, pic = Sample("q", "a", "b"), Sample("q", "a", "b", media=[MediaItem("image", str(image))])
    for sample, judged, vote, agree in [(text, "A", "A", True), (text, "A", "B", False), (pic, "B", "B", True),
                                        (pic, None, "A", None), (pic, "tie", "both_bad", True)]:
        book.cast(sample, _judgment(judged, agree), vote, ABOUT)
    stats = vote_stats([*book.records(), {"not": "a vote"}])
    overall = stats["overall"]
    assert (overall.votes, overall.judged, overall.agree) == (5, 4, 3) and overall.rate == 0.75
    assert stats["by_modality"]["text"].rate == 0.5 and stats["by_modality"]["image"].rate == 1.0
    assert stats["by_swap"]["both orders agree"].rate == 1.0 and stats["by_swap"]["orders disagree"].rate == 0.0
    assert stats["confusion"]["B", "A"] == 1 and stats["confusion"]["A", NO_VERDICT] == 1
    assert stats["confusion"]["both_bad", "tie"] == 1 and stats["not_votes"] == 1
