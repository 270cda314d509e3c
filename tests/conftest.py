"""Shared fixtures: a tiny random Omni checkpoint and real media files made on the spot."""

from __future__ import annotations

import numpy as np
import pytest

from rrm.judge import GenerationSettings, Judge
from rrm.testing import make_parrot, make_tiny, make_tiny_chat

from .media_files import make_audio, make_image, make_video


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny") / "thinker")


@pytest.fixture(scope="session")
def tiny_full_dir(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny") / "full", full=True)


@pytest.fixture(scope="session")
def tiny_vl_dir(tmp_path_factory):
    return make_tiny_chat(tmp_path_factory.mktemp("tiny") / "vl", "vl")


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory):
    return make_tiny_chat(tmp_path_factory.mktemp("tiny") / "text", "text")


@pytest.fixture(scope="session")
def parrot_dir(tmp_path_factory):
    """A tiny model taught the judgment of each bundled example (about a minute on two cores)."""
    return make_parrot(tmp_path_factory.mktemp("tiny") / "parrot", progress=False)


@pytest.fixture(scope="session")
def judge(tiny_dir):
    # A random model may end at once: force a fixed number of tokens so that
    # tests can count them.
    return Judge.from_pretrained(str(tiny_dir), generation=GenerationSettings(max_new_tokens=12, min_new_tokens=12))


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    make_image(d / "red.png", (120, 90))
    make_video(d / "clip.mp4", frames=30, fps=10)
    make_audio(d / "tone.wav", seconds=1.5, rate=22050)
    return d


@pytest.fixture
def rng():
    return np.random.default_rng(0)
