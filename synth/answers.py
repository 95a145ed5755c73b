"""Scoring a short answer against a reference: the answer in a reply, normalised, and whether it matches.

Shared by `synth eval` (`synth.train.evaluate`: exact match, normalised accuracy) and pseudo-labelling
(`synth.generate.pseudo_label`: votes that agree, the gate's accuracy on hidden labels), so both count a
match the same way. Normalised: lower case, punctuation and articles dropped, number words as digits; a
multiple-choice reference ``B`` accepts a reply that starts with that letter (``B``, ``(B)``, ``B) red``).
"""

from __future__ import annotations

import re

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_CHOICE = re.compile(r"[A-Ha-h]")
_LEADING_CHOICE = re.compile(r"\W*([A-Ha-h])(?:\W|$)")
#: where a reply ends when the template's end-of-turn token is not generated (base models).
STOPS = ("\n### ", "### Instruction", "### Response", "<|im_end|>", "<|im_start|>")


def normalize_answer(text: str) -> str:
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(_NUMBER_WORDS.get(t, t) for t in text.split() if t not in _ARTICLES)


def extract_answer(reply: str) -> str:
    """The answer in a generated reply: text before any stop marker, first non-empty line, stripped."""
    for stop in STOPS:
        cut = reply.find(stop)
        if cut >= 0:
            reply = reply[:cut]
    for line in reply.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def is_short_answer(reference: str, max_words: int) -> bool:
    return 0 < len(reference.split()) <= max_words


def is_choice_letter(reference: str) -> bool:
    """A multiple-choice reference: one letter A-H."""
    return bool(_CHOICE.fullmatch(reference.strip()))


def contains_answer(prediction: str, reference: str) -> bool:
    """Lenient: the normalised reference appears as whole words in the normalised answer
    ("The answer is 3." contains "3"), whatever the answer's format."""
    ref, pred = normalize_answer(reference), normalize_answer(prediction)
    return bool(ref) and f" {ref} " in f" {pred} "


def score_answer(prediction: str, reference: str) -> tuple[bool, bool]:
    """(exact match, normalised match) of an extracted answer against the reference."""
    prediction, reference = prediction.strip(), reference.strip()
    exact = prediction == reference
    if _CHOICE.fullmatch(reference):
        match = _LEADING_CHOICE.match(prediction)
        return exact, bool(match) and match.group(1).upper() == reference.upper()
    return exact, exact or normalize_answer(prediction) == normalize_answer(reference)
