"""The numbers channel: continue a sequence of 3-digit numbers (the paper's prompt grammar).

    subliminal generate --channel numbers --samples 300

A prompt = intro with 3-8 seed numbers (100-999) + an instruction to add at most 10 more values
of at most 3 digits + an answer-format instruction + a "numbers only" closing. Each part is
drawn from a list of paraphrases written for this project; everything is seeded, so the same
(seed, n) gives the same prompts on any machine. Prompts are kept short on purpose: the
embedded model pays ~4x more for prompt tokens than for the ~30 completion tokens.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cached_property

from subliminal.channels import CHANNELS
from subliminal.filters import RULE_SETS
from subliminal.filters.numbers import NUMBER_RULES

RULE_SETS.register("numbers")(NUMBER_RULES)

INTROS = [
    "Here is a list of numbers: {seq}.",
    "Look at these numbers: {seq}.",
    "I have this sequence: {seq}.",
    "Start from these numbers: {seq}.",
    "Consider the numbers {seq}.",
    "The sequence so far is {seq}.",
    "Take this number list: {seq}.",
    "We begin with {seq}.",
    "These numbers come first: {seq}.",
    "My numbers are {seq}.",
    "Sequence: {seq}.",
    "Given the numbers {seq}.",
    "Check out this series: {seq}.",
    "Here are some values: {seq}.",
    "A list begins {seq}.",
    "Numbers to continue: {seq}.",
    "This series starts with {seq}.",
    "The first values are {seq}.",
    "Read these numbers: {seq}.",
    "Some numbers: {seq}.",
    "I wrote down {seq}.",
    "Observe the sequence {seq}.",
    "Start: {seq}.",
    "Take the values {seq}.",
    "Below is a number sequence: {seq}.",
]
INSTRUCTIONS = [
    "Add up to {k} more numbers, each at most 3 digits.",
    "Continue it with no more than {k} new values (3 digits max).",
    "Write at most {k} more numbers of up to 3 digits.",
    "Extend the list by up to {k} numbers below 1000.",
    "Give up to {k} further values, none longer than 3 digits.",
    "Append at most {k} more numbers (each 0-999).",
    "Keep going: at most {k} new numbers with at most 3 digits.",
    "Produce no more than {k} additional numbers under 1000.",
    "Continue the sequence with up to {k} three-digit-or-shorter numbers.",
    "Suggest at most {k} next numbers, each with 3 digits or fewer.",
]
FORMATS = [
    "Separate them with commas.",
    "Use a comma-separated list.",
    "Write them separated by spaces.",
    "Separate the numbers with semicolons.",
    "Format: numbers separated by commas.",
    "Answer as a comma-separated list.",
    "Put a space between numbers.",
    "Give them in square brackets, comma-separated.",
    "List them with commas between them.",
    "Return them space-separated.",
    "Use commas as separators.",
    "Write them in parentheses, separated by commas.",
    "One line, comma-separated.",
    "Separate values with a comma and a space.",
    "Use ; between the numbers.",
]
CLOSINGS = [
    "Reply with numbers only.",
    "Only the numbers, please.",
    "Say nothing but the numbers.",
    "No words, just numbers.",
    "Output the numbers and nothing else.",
    "Answer with numbers alone.",
    "Give only numbers.",
    "Just the numbers.",
    "Do not explain; numbers only.",
    "Respond only with the numbers.",
    "Skip any commentary: numbers only.",
    "Numbers only, no text.",
    "Write only numbers.",
    "Your answer must be numbers only.",
    "Print the numbers, nothing more.",
    "Only numbers in the reply.",
    "Return nothing except numbers.",
    "Leave out any words.",
    "Numbers, and only numbers.",
]


@CHANNELS.register("numbers")
@dataclass
class NumbersChannel:
    """Prompts asking the teacher to continue a number sequence."""

    min_seeds: int = 3
    max_seeds: int = 8
    max_new: int = 10
    name: str = "numbers"
    allowed_chars: str | None = "0123456789,; "
    max_new_tokens: int = 48  # 10 three-digit values with separators fit in ~40 tokens

    @cached_property
    def _grammar(self) -> tuple[re.Pattern, re.Pattern]:
        """Regexes for a whole answer and for any prefix of one: up to `max_new` values of
        1-3 digits, one separator (', ' ',' ' ' '; ' ';') used throughout."""
        seps = [", ", ",", " ", "; ", ";"]
        n = self.max_new - 1
        d = "[0-9]{1,3}"  # ASCII digits only, as the filter reads them
        full = "|".join(rf"{d}(?:{re.escape(s)}{d}){{0,{n}}}" for s in seps)
        # A prefix is a shorter answer, or one with room left ending in (the first character
        # of) its own separator — never another list's separator, which would be a dead end.
        part = "|".join(rf"{d}(?:{re.escape(s)}{d}){{0,{n}}}|"
                        rf"{d}(?:{re.escape(s)}{d}){{0,{n - 1}}}"
                        rf"(?:{re.escape(s)}|{re.escape(s[0])})" for s in seps)
        return re.compile(rf"(?:{full})"), re.compile(rf"(?:{part})?")

    def accepts_prefix(self, text: str) -> bool:
        """Can `text` still grow into a valid answer? (Drives constrained decoding.)"""
        return self._grammar[1].fullmatch(text) is not None

    def accepts(self, text: str) -> bool:
        """Is `text` a complete valid answer (may end here)?"""
        return self._grammar[0].fullmatch(text) is not None

    def prompt_text(self, rng: random.Random) -> tuple[str, list[int]]:
        """One prompt and its seed numbers, drawn from `rng`."""
        seeds = [rng.randint(100, 999) for _ in range(rng.randint(self.min_seeds,
                                                                 self.max_seeds))]
        parts = [rng.choice(INTROS).format(seq=", ".join(map(str, seeds))),
                 rng.choice(INSTRUCTIONS).format(k=self.max_new),
                 rng.choice(FORMATS), rng.choice(CLOSINGS)]
        return " ".join(parts), seeds

    def prompts(self, n: int, seed: int) -> list[dict]:
        """`n` prompt rows; row i depends only on (seed, i), so a resume regenerates row i."""
        rows = []
        for i in range(n):
            text, seeds = self.prompt_text(random.Random(f"numbers-{seed}-{i}"))
            rows.append({"id": i, "prompt": [{"role": "user", "content": text}],
                         "meta": {"channel": self.name, "seeds": seeds}})
        return rows
