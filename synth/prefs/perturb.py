"""``perturb`` (offline, no LLM): chosen = the reference, rejected = the reference with one visual fact swapped.

One fact in the reference answer is replaced by another value of the same kind: a colour for a colour, a
number for a number (digits stay digits, words stay words), a position for its opposite (left/right,
above/below, top/bottom), a size for another size, yes for no, an object for another object that is
present in the image or absent from it. Values come from the dataset itself (a first pass collects the
colours, objects, sizes and numbers seen in answers, in QA kinds and in scene objects) plus a small
built-in list. The articles and number agreement next to the swap follow it ("a red" → "an orange",
"one circle is" → "three circles are"). Choices are fixed by the seed and the prompt id.

``meta.perturb`` records the swap: kind, original, replacement, character offset, and for objects
whether the replacement is present in the scene. A reference with no fact to swap is dropped
(``no_swappable_fact``); chosen never equals rejected (checked again, ``identical``).

Requests per prompt: 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from synth.hashing import unit_hash
from synth.pipeline import Rejected
from synth.prefs.base import CommaList, Outcome, PreferenceStage, PrefsConfig
from synth.prefs.items import PromptItem, message_text, usable_items

Kind = Literal["yesno", "number", "color", "size", "position", "object"]
#: the order in which a word is classified when it could be of several kinds
KINDS: tuple[str, ...] = ("yesno", "number", "color", "size", "position", "object")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
BUILTIN: dict[str, tuple[str, ...]] = {
    "color": ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray"),
    "size": ("small", "medium", "large"),
}
#: built-in objects in groups: a shape is swapped for a shape, a thing for a thing
OBJECT_GROUPS = (
    ("circle", "square", "triangle", "star", "hexagon", "rectangle", "pentagon", "oval", "diamond"),
    ("person", "man", "woman", "child", "dog", "cat", "horse", "bird", "car", "bus", "truck", "bicycle",
     "boat", "chair", "table", "cup", "bottle", "book", "phone", "laptop", "tree", "flower", "ball", "clock"),
)
BUILTIN["object"] = tuple(w for group in OBJECT_GROUPS for w in group)
#: words that mean the same: never swapped for each other, and read as their canonical value
SYNONYMS = {"grey": "gray", "big": "large", "little": "small", "tiny": "small", "huge": "large"}
OPPOSITES = {"left": "right", "right": "left", "above": "below", "below": "above", "top": "bottom",
             "bottom": "top", "upper": "lower", "lower": "upper", "yes": "no", "no": "yes"}
POSITIONS = ("left", "right", "above", "below", "top", "bottom", "upper", "lower")
# "one" is a pronoun after these ("the one on the left"), not a count
_NOT_A_COUNT_BEFORE = {"the", "this", "that", "which", "each", "every", "any", "no", "another", "someone", "no-one"}
_NOT_A_PLACE_BEFORE = re.compile(r"\b(?:that's|that is|all|exactly|quite)\s+$", re.I)
_GENERIC_NOUNS = {"shape", "object", "item", "thing", "figure", "animal", "vehicle", "person", "people"}
_WORD = re.compile(r"[A-Za-z][A-Za-z\-]*|\d+")
_QUESTION_KINDS = [
    (re.compile(r"\bwhat colou?r\b", re.I), "color"),
    (re.compile(r"\bhow many\b", re.I), "number"),
    (re.compile(r"\bwhat (?:shape|object|kind of (?:shape|object))\b", re.I), "object"),
    (re.compile(r"\bwhat size\b|\bhow (?:big|large)\b", re.I), "size"),
]
QA_KINDS = {"count": "number", "color": "color", "colour": "color", "spatial": "position", "exists": "yesno",
            "shape": "object", "size": "size"}


def plural(word: str) -> str:
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word in ("man", "woman"):
        return word[:-2] + "en"
    if word == "child":
        return "children"
    if word == "person":
        return "people"
    return word + "s"


def singular(word: str) -> str:
    irregular = {"men": "man", "women": "woman", "children": "child", "people": "person"}
    if word in irregular:
        return irregular[word]
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def number_value(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    word = word.lower()
    return NUMBER_WORDS.index(word) if word in NUMBER_WORDS else None


@dataclass
class Vocabulary:
    """Values of each kind seen in the dataset (with counts), on top of the built-in lists."""

    seen: dict[str, Counter] = field(default_factory=lambda: {k: Counter() for k in KINDS})

    def add(self, kind: str, value: Any) -> None:
        text = str(value or "").strip().lower()
        text = re.sub(r"^(?:a|an|the)\s+", "", text).strip(" .!")
        if not text or kind not in self.seen:
            return
        if kind == "number":  # counted by value: "3" and "three" are one number
            if number_value(text) is not None:
                self.seen[kind][str(number_value(text))] += 1
            return
        if kind == "object" and " " in text:
            text = text.split()[-1]  # "purple triangle" → "triangle"
        if " " in text or not re.fullmatch(r"[a-z][a-z\-]*", text):
            return
        text = SYNONYMS.get(text, text)
        if kind == "object" and text not in BUILTIN["object"] and text.endswith("s") and singular(text) in self.seen["object"]:
            text = singular(text)
        if kind in ("position", "yesno") and text not in OPPOSITES:
            return
        self.seen[kind][text] += 1

    def observe(self, item: PromptItem) -> None:
        """Learn from one prompt: its structured answer kind, its question, its scene objects, its answer."""
        reference = item.reference or ""
        kind = QA_KINDS.get(str(item.answer_kind or "").lower())
        if kind and reference:
            self.add(kind, reference)
        elif reference and len(reference.split()) <= 3:
            for pattern, guessed in _QUESTION_KINDS:
                if pattern.search(item.question):
                    self.add(guessed, reference.split()[-1] if guessed != "number" else reference.split()[0])
                    break
        if item.scene is not None:
            for obj in item.scene.objects:
                if obj.get("color"):
                    self.add("color", obj["color"])
                if obj.get("shape"):
                    self.add("object", obj["shape"])
                elif obj.get("label"):
                    self.add("object", obj["label"])
                if obj.get("size"):
                    self.add("size", obj["size"])
        for word in _WORD.findall(reference):
            kind = self.kind_of(word)
            if kind in ("color", "size", "object", "number"):
                self.add(kind, singular(word.lower()) if kind == "object" else word)

    @classmethod
    def from_items(cls, items: Iterable[PromptItem]) -> Vocabulary:
        vocabulary = cls()
        for item in items:
            vocabulary.observe(item)
        return vocabulary

    def known(self, kind: str) -> set[str]:
        return set(self.seen[kind]) | set(BUILTIN.get(kind, ()))

    def kind_of(self, word: str) -> str | None:
        """The kind of a single word (plural objects included), or None."""
        low = word.lower()
        canonical = SYNONYMS.get(low, low)
        if low in ("yes", "no"):
            return "yesno"
        if number_value(low) is not None:
            return "number"
        if canonical in self.known("color"):
            return "color"
        if canonical in self.known("size"):
            return "size"
        if low in POSITIONS:
            return "position"
        if canonical in self.known("object") or singular(low) in self.known("object"):
            return "object"
        return None

    def ranked(self, kind: str) -> list[str]:
        """Dataset values first (most frequent first), then the built-in ones."""
        values = [v for v, _ in sorted(self.seen[kind].items(), key=lambda kv: (-kv[1], kv[0]))]
        return values + [v for v in BUILTIN.get(kind, ()) if v not in self.seen[kind]]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {k: dict(c.most_common()) for k, c in self.seen.items() if c}


@dataclass
class Fact:
    kind: str
    word: str
    start: int
    end: int


def find_facts(text: str, vocabulary: Vocabulary, kinds: Iterable[str]) -> list[Fact]:
    """The swappable words of `text`, in order."""
    allowed = set(kinds)
    facts = []
    matches = list(_WORD.finditer(text))
    for index, match in enumerate(matches):
        word = match.group()
        kind = vocabulary.kind_of(word)
        if kind is None or kind not in allowed:
            continue
        low = word.lower()
        before = matches[index - 1].group().lower() if index else ""
        if kind == "yesno" and len(matches) != 1:
            continue  # only a bare yes/no answer flips cleanly; "No, there is no ..." would contradict itself
        if kind != "yesno" and _negated(text, match.start()):
            continue  # "there is no blue triangle" may stay true with another colour: not a sure error
        if kind == "number":
            if word.isdigit() and _in_decimal(text, match.start(), match.end()):
                continue
            if low == "one" and before in _NOT_A_COUNT_BEFORE:
                continue
        if kind == "position" and low == "right" and (
            _NOT_A_PLACE_BEFORE.search(text[: match.start()])
            or (index + 1 < len(matches) and matches[index + 1].group().lower() in ("now", "away"))
        ):
            continue  # "that's right", "right away": not a place
        facts.append(Fact(kind, word, match.start(), match.end()))
    return facts


_NEGATION = re.compile(r"\b(?:no|not|none|neither|nor|never|nothing|without|cannot)\b|n't\b", re.I)


def _negated(text: str, start: int) -> bool:
    """Whether a negation precedes position `start` in its sentence."""
    sentence = re.split(r"[.!?;]\s", text[:start])[-1]
    return bool(_NEGATION.search(sentence))


def _in_decimal(text: str, start: int, end: int) -> bool:
    """A digit run that is part of a decimal or a coordinate ("0.25", "1.5"), not a count."""
    if start > 0 and text[start - 1] in ".,":
        return start > 1 and text[start - 2].isdigit()
    return end < len(text) - 1 and text[end] in ".," and text[end + 1].isdigit()


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def present_words(item: PromptItem, vocabulary: Vocabulary) -> set[str]:
    """Objects the image has: from the scene, else the ones the prompt's own text mentions."""
    found = set()
    if item.scene is not None:
        for obj in item.scene.objects:
            words = str(obj.get("shape") or obj.get("label") or "").split()
            if words:
                found.add(singular(words[-1].lower()))
        for word in _WORD.findall(item.scene.caption or ""):
            if vocabulary.kind_of(word) == "object":
                found.add(singular(word.lower()))
    for message in item.prompt:
        for word in _WORD.findall(message_text(message)):
            if vocabulary.kind_of(word) == "object":
                found.add(singular(word.lower()))
    return found


class PerturbConfig(PrefsConfig):
    kinds: CommaList[Kind] = Field(default_factory=lambda: list(KINDS), min_length=1,
                                   description="kinds of fact that may be swapped (a list, or a comma list)")


class PerturbStrategy(PreferenceStage):
    """Input: prompts with a reference answer. Output: (reference, reference with one fact swapped) pairs.

    Give a `vocabulary` built in a first pass (`Vocabulary.from_items`, what the driver does) to stream;
    without one, the stage reads its whole input first to build it."""

    name: ClassVar[str] = "prefs-perturb"
    strategy: ClassVar[str] = "perturb"
    Config = PerturbConfig
    offline = True

    def __init__(self, config=None, *, vocabulary: Vocabulary | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.vocabulary = vocabulary

    @classmethod
    def from_parts(cls, config, *, samplers, judge, scenes=None) -> PerturbStrategy:
        return cls(config, scenes=scenes)

    def prepare(self, source) -> None:
        """The values a fact may swap to come from the whole input (a first pass over the text; images
        stay undecoded), so every shard of a run draws from the same ones."""
        if self.vocabulary is None:
            self.vocabulary = Vocabulary.from_items(
                i for r in source.records(on_bad=lambda stub, error: None) for i in usable_items(r, self.scenes))

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        if self.vocabulary is None:
            records = list(records)
            self.vocabulary = Vocabulary.from_items(i for r in records for i in usable_items(r, self.scenes))
        yield from super().run(records)

    def models(self) -> dict[str, Any]:
        return {}

    def plan(self, item: PromptItem):
        return self.perturb(item)
        yield []  # pragma: no cover - a plan is a generator; perturb asks nothing

    def perturb(self, item: PromptItem) -> Outcome:
        outcome = Outcome()
        reference = item.reference
        if not reference:
            return outcome.drop(Rejected("no_reference", "the prompt has no reference answer to perturb"))
        assert self.vocabulary is not None
        facts = find_facts(reference, self.vocabulary, self.config.kinds)
        start = int(unit_hash(self.config.seed, item.id, "fact") * len(facts)) if facts else 0
        # Try the facts in a seeded order: the first that has a different same-kind value wins.
        for fact in facts[start:] + facts[:start]:
            swap = self.replacement(item, fact)
            if swap is None:
                continue
            replacement, present = swap
            rejected = apply_swap(reference, fact, replacement, self.vocabulary)
            record = {"kind": fact.kind, "original": fact.word, "replacement": replacement, "offset": fact.start}
            if fact.kind == "object":
                record["present"] = present
            if outcome.add_pair(item, reference, rejected, {"perturb": record, "models": {"chosen": "reference", "rejected": "perturb"}}):
                return outcome
            outcome.drops.pop()  # identical after the swap (cannot happen for a real swap): try the next fact
        kinds = ", ".join(self.config.kinds)
        return outcome.drop(Rejected("no_swappable_fact", f"no {kinds} value to swap in {reference[:120]!r}"))

    def replacement(self, item: PromptItem, fact: Fact) -> tuple[str, bool | None] | None:
        """A different value of the fact's kind (in the word's own case, number form and plurality)."""
        assert self.vocabulary is not None
        low = fact.word.lower()
        pick = unit_hash(self.config.seed, item.id, "value", fact.start)
        if fact.kind in ("position", "yesno"):
            return _match_case(fact.word, OPPOSITES[low]), None
        if fact.kind == "number":
            value = number_value(low)
            as_word = not fact.word.isdigit()
            pool = []
            for v in self.vocabulary.ranked("number") + [str(n) for n in range(11)]:
                n = number_value(v)
                if n is None or n == value or (as_word and n >= len(NUMBER_WORDS)):
                    continue
                text = NUMBER_WORDS[n] if as_word else str(n)
                if text not in pool:
                    pool.append(text)
            seen = [p for p in pool if str(number_value(p)) in self.vocabulary.seen["number"]]
            pool = seen or pool
            return (_match_case(fact.word, pool[int(pick * len(pool))]), None) if pool else None
        canonical = SYNONYMS.get(low, low)
        is_plural = fact.kind == "object" and canonical not in self.vocabulary.known("object")
        base = singular(canonical) if is_plural else canonical
        same = {base} | {w for w, c in SYNONYMS.items() if c == base}
        values = [v for v in self.vocabulary.ranked(fact.kind) if v not in same]
        seen = [v for v in values if v in self.vocabulary.seen[fact.kind]]
        if fact.kind == "object":  # the dataset's own objects, else the original's built-in group
            group = next((g for g in OBJECT_GROUPS if base in g), ())
            kin = [v for v in seen if not group or v in group or v not in BUILTIN["object"]]
            values = kin or [v for v in values if v in group] or values
        else:
            values = seen or values
        labels = scene_labels(item)
        if labels and fact.kind in ("color", "object"):
            # "below the red circle" → "below the red square" may be true when the scene has a red square
            values = [v for v in values if label_after(item.reference or "", fact, v, self.vocabulary) not in labels]
        present: bool | None = None
        if fact.kind == "object":
            here = present_words(item, self.vocabulary) - same
            inside = [v for v in values if v in here]
            outside = [v for v in values if v not in here]
            if inside and outside:
                use_present = unit_hash(self.config.seed, item.id, "present") < 0.5
                values = inside if use_present else outside
            else:
                values = inside or outside
            if not values:
                return None
            choice = values[int(pick * len(values))]
            present = choice in here
            return _match_case(fact.word, plural(choice) if is_plural else choice), present
        if not values:
            return None
        return _match_case(fact.word, values[int(pick * len(values))]), None


def scene_labels(item: PromptItem) -> set[str]:
    """The scene's object labels ("red circle"), lower case."""
    if item.scene is None:
        return set()
    labels = set()
    for obj in item.scene.objects:
        if obj.get("color") and obj.get("shape"):
            labels.add(f"{obj['color']} {obj['shape']}".lower())
        elif obj.get("label"):
            labels.add(str(obj["label"]).lower())
    return labels


def label_after(text: str, fact: Fact, value: str, vocabulary: Vocabulary) -> str | None:
    """The "colour object" label the swapped word would form with its neighbour, if it forms one."""
    matches = list(_WORD.finditer(text))
    at = next((i for i, m in enumerate(matches) if m.start() == fact.start), None)
    if at is None:
        return None
    if fact.kind == "color":
        for m in matches[at + 1: at + 4]:
            kind = vocabulary.kind_of(m.group())
            if kind == "size":
                continue
            return f"{value} {singular(m.group().lower())}" if kind == "object" else None
        return None
    for m in reversed(matches[max(0, at - 3): at]):
        kind = vocabulary.kind_of(m.group())
        if kind == "size":
            continue
        return f"{SYNONYMS.get(m.group().lower(), m.group().lower())} {value}" if kind == "color" else None
    return None


def apply_swap(text: str, fact: Fact, replacement: str, vocabulary: Vocabulary) -> str:
    """`text` with the fact's word replaced, and the article / number agreement around it fixed."""
    head, tail = text[: fact.start], text[fact.end:]
    # "a red circle" → "an orange circle"
    article = re.search(r"\b(a|an|A|An|AN)(\s+)$", head)
    if article:
        word = "an" if replacement[:1].lower() in "aeiou" else "a"
        word = _match_case(article.group(1), word)
        head = head[: article.start(1)] + word + article.group(2)
    if fact.kind == "number":
        old, new = number_value(fact.word), number_value(replacement)
        if (old == 1) != (new == 1):
            tail = _agree_noun(tail, many=new != 1, vocabulary=vocabulary)
            head = _agree_verb(head, many=new != 1)
    return head + replacement + tail


def _agree_noun(tail: str, many: bool, vocabulary: Vocabulary) -> str:
    """Pluralise (or singularise) the noun a count refers to, skipping colour and size words before it."""
    for index, match in enumerate(_WORD.finditer(tail)):
        if index >= 4:
            break
        word = match.group()
        kind = vocabulary.kind_of(word)
        if kind in ("color", "size"):
            continue
        low = word.lower()
        if kind == "object" or low in _GENERIC_NOUNS or singular(low) in _GENERIC_NOUNS:
            form = plural(singular(low)) if many else singular(low)
            return tail[: match.start()] + _match_case(word, form) + tail[match.end():]
        break
    return tail


def _agree_verb(head: str, many: bool) -> str:
    """ "There is one" ↔ "There are three": the verb right before the count follows it."""
    match = re.search(r"\b(is|are|Is|Are|was|were|Was|Were)(\s+)$", head)
    if not match:
        return head
    verb = match.group(1)
    table = {"is": "are", "was": "were"} if many else {"are": "is", "were": "was"}
    new = table.get(verb.lower())
    if new is None:
        return head
    return head[: match.start(1)] + _match_case(verb, new) + match.group(2)

