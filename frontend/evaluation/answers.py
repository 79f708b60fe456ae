"""The multiple-choice prompt a question is asked with, and how an answer is read back as a letter.

`build_prompt` follows the prompt of Video-MME's evaluation (the other long-video benchmarks use the
same shape): an instruction to answer with the letter only, the question, the options as ``"A. text"``
lines, and ``"The best answer is:"``. `extract_letter` follows Video-MME's ``extract_characters_regex``:

1. strip the text and remove the answer prefixes models commonly write (``"The best answer is"``,
   ``"The correct answer is"``, ``"The answer is"``, ``"The answer"``, ``"The best option is"``,
   ``"The correct option is"``, ``"Best answer:"``, ``"Best option:"``);
2. a reply of more than 10 words with no option letter in it counts as no answer (``""``);
3. otherwise the first option letter anywhere in the text is the answer (case-sensitive, as the
   official script: ``"Based on the video"`` reads as ``B``, which is why the prompt asks for the letter only).

Where this differs, on purpose: the letters are those of the item's options (``A``..``D`` for Video-MME's
four, up to ``F`` for LongVideoBench / MLVU, as VideoLLaMA2's variant of the function takes a maximum),
and the official list misses two commas, so its ``"The best option is"`` / ``"The correct option is"`` and
``"Best answer:"`` / ``"Best option:"`` are never removed there; here they are. That changes one case:
``"Best answer: C"`` reads as ``C`` here and as the ``B`` of ``Best`` in the official script.
"""

from __future__ import annotations

import re

from .qa_items import LETTERS, QAItem

__all__ = ["ANSWER_PREFIXES", "build_prompt", "extract_letter"]

ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)
"""Phrases removed before the letter is looked for (Video-MME's list, in its order)."""

_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video. "
                "Respond with only the letter of the correct option.")


def build_prompt(item: QAItem) -> str:
    """The text part of the user message for ``item`` (the video goes in the same message, before it)."""
    lines = [_INSTRUCTION, item.question]
    lines += [f"{letter}. {text}" for letter, text in zip(LETTERS, item.options)]
    lines.append("The best answer is:")
    return "\n".join(lines)


def extract_letter(response: str, num_options: int) -> str:
    """The option letter in a model's reply, or ``""`` when it gives none (see the module docstring).

    Args:
        response: the generated text.
        num_options: how many options the question has (letters ``A`` .. ``LETTERS[num_options-1]``).
    """
    if not 2 <= num_options <= len(LETTERS):
        raise ValueError(f"num_options: expected 2..{len(LETTERS)}, got {num_options}")
    text = response.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    letters = LETTERS[:num_options]
    if len(text.split()) > 10 and not re.search(f"[{letters}]", text):
        return ""
    found = re.search(f"[{letters}]", text)
    return found.group(0) if found else ""
