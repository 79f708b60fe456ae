"""Prompt and letter extraction (`evaluation.answers`) on replies whose letter is known."""

from __future__ import annotations

import pytest

from mosaic_sglang.frontend.evaluation.answers import build_prompt, extract_letter
from mosaic_sglang.frontend.evaluation.qa_items import QAItem


def test_prompt_lists_the_options_in_letter_order():
    item = QAItem(qid="1", video="v.mp4", question="What colour is the ball?", options=("red", "green", "blue"),
                  answer="B")
    lines = build_prompt(item).splitlines()
    assert lines[1] == "What colour is the ball?"
    assert lines[2:5] == ["A. red", "B. green", "C. blue"]
    assert lines[-1] == "The best answer is:" and "letter" in lines[0]


@pytest.mark.parametrize("reply, letter", [
    ("C", "C"),
    (" B.", "B"),
    ("(D) a cat", "D"),
    ("The best answer is: A", "A"),
    ("The correct answer is D because the digit appears at 30 s.", "D"),
    ("The answer is C", "C"),
    ("Best answer: C", "C"),            # the official list's missing commas would read the B of "Best"
    ("Based on the video, A", "B"),     # case-sensitive first capital in range, as the official script
    ("answer: c", ""),                  # lower case is not a letter
    ("", ""),
    ("I cannot tell from these frames what is shown here at all, sorry about that", ""),  # > 10 words
    ("E", ""),                          # out of range for four options
])
def test_extract_letter(reply, letter):
    assert extract_letter(reply, 4) == letter


def test_more_options_widen_the_letters():
    assert extract_letter("E", 5) == "E" and extract_letter("F. yes", 6) == "F"
    with pytest.raises(ValueError, match="num_options: expected 2..26, got 1"):
        extract_letter("A", 1)
