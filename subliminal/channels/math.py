"""The math channel: worked arithmetic solutions as a carrier (the paper's second channel).

    subliminal generate --channel math --samples 300

The paper used GSM8K; no machine here can download it, so problems are generated: a seeded
word problem built from a small expression tree (kept in `meta.expr`), so its answer is known
exactly and can be recomputed independently of the text. Four difficulty levels, from one-step
sums a 135M model can manage to four-step problems with products and an exact division for
larger models. A user with GSM8K locally passes `problems=PATH` (JSONL, question/answer).
The teacher answers as `<think>...</think><answer>N</answer>`, shown by a one-shot chat turn and
started by a `<think>` prefill; filters keep correct rows only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from subliminal.channels import CHANNELS
from subliminal.channels.numbers import NumbersChannel
from subliminal.errors import SubliminalError
from subliminal.filters import RULE_SETS
from subliminal.filters.math import MATH_RULES
from subliminal.records import iter_jsonl

RULE_SETS.register("math")(MATH_RULES)

LEVELS = (1, 2, 3, 4)
# A one-shot example as a previous chat turn, and the assistant turn prefilled with <think>:
# measured on SmolLM2-135M, without the prefill no trace (0/40) used the tags, and with it an
# inline example was copied (11/12); this pair gives the format in ~80% of traces.
# A one-step example: a two-step one made the small model add a spurious second step.
EXAMPLE = [{"role": "user", "content": "Lena has 5 books. Lena buys 3 more. How many books "
            "does Lena have now? Reply as <think>working</think><answer>number</answer>."},
           {"role": "assistant", "content": "<think>5 + 3 = 8</think><answer>8</answer>"}]
PREFILL = "<think>"
# Names and items avoid every animal word: the leak filter reads the whole trace, and a
# teacher that restates the problem must not be rejected for the problem's own words.
NAMES = ["Ana", "Ben", "Carla", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jon",
         "Kemi", "Lena", "Milo", "Nora", "Omar", "Priya", "Ravi", "Sara", "Theo", "Uma"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "cards",
         "shells", "buttons", "beads", "oranges", "candles", "tickets", "crayons", "balloons"]
GOODS = [("notebook", "notebooks"), ("pen", "pens"), ("mug", "mugs"), ("ball", "balls"),
         ("plant", "plants"), ("lamp", "lamps"), ("cup", "cups"), ("kite", "kites")]
PRODUCTS = [("workshop", "chairs"), ("bakery", "loaves"), ("factory", "bottles"),
            ("printer", "posters"), ("farm", "baskets"), ("kitchen", "pies")]

Expr = int | list  # a leaf, or [op, left, right] with op in + - * /


def evaluate(expr: Expr) -> int:
    """The value of an expression tree; division must be exact (problems have whole answers)."""
    if isinstance(expr, int):
        return expr
    op, a, b = expr[0], evaluate(expr[1]), evaluate(expr[2])
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/" and b and a % b == 0:
        return a // b
    raise ValueError(f"bad expression node {expr!r}")


def _share(rng: random.Random, value: int) -> tuple[int, int]:
    """A group size d in 2..9 and the remainder to remove first, so `value` splits exactly."""
    d = rng.randint(2, min(9, value))
    return value % d, d


def collection(rng: random.Random, level: int) -> tuple[str, Expr]:
    """Someone's stock of items changes step by step ('Ana has 12 stickers. She buys ...')."""
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    top = (20, 50, 100, 100)[level - 1]
    start = rng.randint(2, top)
    text, expr = [f"{name} has {start} {items}."], start
    if level == 2 and rng.random() < 0.5:  # a single product: packs of a fixed size
        n, m = rng.randint(2, 9), rng.randint(2, 12)
        return (f"{name} buys {n} packs of {items}. Each pack holds {m} {items}. "
                f"How many {items} does {name} buy?"), ["*", n, m]
    steps = (1, 2, 3, 3)[level - 1]
    product_at = rng.randrange(steps) if level >= 3 else -1
    for s in range(steps):
        value = evaluate(expr)
        if s == product_at:
            n, m = rng.randint(2, 6), rng.randint(2, 10)
            if value > n * m and rng.random() < 0.5:
                text.append(f"{name} gives {m} {items} to each of {n} friends.")
                expr = ["-", expr, ["*", n, m]]
            else:
                text.append(f"{name} buys {n} packs with {m} {items} in each.")
                expr = ["+", expr, ["*", n, m]]
        elif value > 1 and rng.random() < 0.5:
            k = rng.randint(1, min(value - 1, top))
            text.append(rng.choice([f"{name} gives {k} to a friend.", f"{name} loses {k}.",
                                    f"{name} uses {k} of them."]))
            expr = ["-", expr, k]
        else:
            k = rng.randint(1, top)
            text.append(rng.choice([f"{name} buys {k} more.", f"{name} finds {k} more.",
                                    f"A friend gives {name} {k} more."]))
            expr = ["+", expr, k]
    if level == 4 and evaluate(expr) >= 2:
        loss, d = _share(rng, evaluate(expr))
        if loss:
            text.append(f"{name} loses {loss}.")
            expr = ["-", expr, loss]
        text.append(f"{name} then shares all of them equally among {d} friends. "
                    f"How many {items} does each friend get?")
        return " ".join(text), ["/", expr, d]
    text.append(f"How many {items} does {name} have now?")
    return " ".join(text), expr


def shopping(rng: random.Random, level: int) -> tuple[str, Expr]:
    """Prices, totals and change ('Ben buys 3 pens at $4 each and pays with a $20 bill')."""
    name = rng.choice(NAMES)
    (one, many), (one2, many2) = rng.sample(GOODS, 2)
    if level == 1:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        return (f"{name} buys a {one} for ${a} and a {one2} for ${b}. "
                f"How many dollars does {name} spend?"), ["+", a, b]
    q, p = rng.randint(2, 9), rng.randint(2, 15)
    cost: Expr = ["*", q, p]
    text = f"{name} buys {q} {many} at ${p} each"
    if level == 4:
        q2, p2 = rng.randint(2, 9), rng.randint(2, 15)
        cost = ["+", cost, ["*", q2, p2]]
        text += f" and {q2} {many2} at ${p2} each"
    if level == 2:
        return f"{text}. How many dollars does {name} spend?", cost
    bill = next(b for b in (10, 20, 50, 100, 200, 500) if b > evaluate(cost))
    return (f"{text}, and pays with a ${bill} bill. How many dollars of change does "
            f"{name} get?"), ["-", bill, cost]


def production(rng: random.Random, level: int) -> tuple[str, Expr]:
    """Rates over time ('A bakery makes 12 loaves an hour for 6 hours a day for 5 days')."""
    place, things = rng.choice(PRODUCTS)
    r, h = rng.randint(5, 20), rng.randint(2, 9)
    text = f"A {place} makes {r} {things} every hour. It works {h} hours a day"
    expr: Expr = ["*", r, h]
    if level == 2:
        return f"{text}. How many {things} does it make in one day?", expr
    d = rng.randint(2, 7)
    expr = ["*", expr, d]
    text += f" for {d} days"
    if level == 3:
        return f"{text}. How many {things} does it make in total?", expr
    # Damaged count chosen so the rest fills boxes exactly (total >= 20 > largest k).
    b = rng.randint(2, 9)
    k = evaluate(expr) % b + b * rng.randint(0, 1) or b
    text += f". {k} of the {things} are damaged and thrown away"
    return (f"{text}. The rest are packed {b} to a box. How many boxes are filled?",
            ["/", ["-", expr, k], b])


# Families that can write each level (one-step production problems would be products).
TEMPLATES = {"collection": collection, "shopping": shopping, "production": production}
FAMILIES = {1: ("collection", "shopping"), 2: tuple(TEMPLATES), 3: tuple(TEMPLATES),
            4: tuple(TEMPLATES)}


def make_problem(rng: random.Random, level: int) -> dict:
    """One generated problem: question text, expression tree and its answer."""
    family = rng.choice(FAMILIES[level])
    question, expr = TEMPLATES[family](rng, level)
    return {"question": question, "answer": evaluate(expr), "difficulty": level,
            "template": family, "expr": expr, "source": "generated"}


def parse_answer(value: object) -> int | None:
    """A GSM8K answer ('... #### 1,234') or a plain integer; None when it is not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    final = value.rsplit("####", 1)[-1].strip().replace(",", "")
    return int(final) if re.fullmatch(r"-?\d+", final) else None


@lru_cache(maxsize=4)
def load_problems(path: str) -> tuple[dict, ...]:
    """Problems from a GSM8K-style JSONL file; any bad row is a one-line error naming it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SubliminalError(f"{p}: problems file not found")
    out = []
    for i, row in enumerate(iter_jsonl(p), start=1):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise SubliminalError(f"{p}: row {i}: missing field 'question'")
        if "answer" not in row:
            raise SubliminalError(f"{p}: row {i}: missing field 'answer'")
        answer = parse_answer(row["answer"])
        if answer is None:
            raise SubliminalError(f"{p}: row {i}: answer is not an integer: "
                                  f"{str(row['answer'])[-40:]!r}")
        # GSM8K marks each calculation <<a*b=c>>: their count is a fair step count.
        steps = str(row["answer"]).count("<<")
        out.append({"question": question.strip(), "answer": answer, "difficulty": steps,
                    "source": p.name, "problem_row": i})
    if not out:
        raise SubliminalError(f"{p}: no problems in file")
    return tuple(out)


def _level(difficulty: int | str) -> int | str:
    """Accept 1-4 (int or CLI string) or 'mixed'; anything else is a one-line error."""
    if str(difficulty).strip().lower() == "mixed":
        return "mixed"
    if str(difficulty).strip() in {str(v) for v in LEVELS}:
        return int(difficulty)
    raise SubliminalError(f"unknown math difficulty {difficulty!r}; choose 1, 2, 3, 4 or mixed")


@CHANNELS.register("math")
@dataclass
class MathChannel:
    """Prompts asking the teacher to solve an arithmetic word problem with a worked trace."""

    difficulty: int | str = field(default="mixed", metadata={
        "help": "Problem level 1-4 (1: one-step sums; 4: four steps with products and an "
                "exact division) or 'mixed' (a level drawn per row)."})
    problems: str | None = field(default=None, metadata={
        "help": "A local GSM8K-style JSONL file (question/answer) to use instead of "
                "generated problems."})
    prefill: str = field(default=PREFILL, metadata={
        "help": "Text the assistant turn starts with; the teacher continues it and the stored "
                "completion includes it (rows carry it as meta.prefill). '' = none."})
    name: str = "math"
    allowed_chars: str | None = None  # free text: no format-constrained decoding
    max_new_tokens: int = field(default=128, metadata={
        "help": "Completion cap: the trace's reasoning needs room, unlike a number list."})

    def __post_init__(self) -> None:
        self.difficulty = _level(self.difficulty)
        if self.problems is not None:
            self.problems = str(self.problems)
            load_problems(self.problems)  # a bad file fails now, before any model loads

    def problem(self, seed: int, i: int) -> dict:
        """Problem i of this channel; depends only on (seed, i) (and the problems file)."""
        if self.problems is not None:
            bank = load_problems(self.problems)
            # A seeded permutation: no problem repeats before the whole file is used.
            order = _permutation(len(bank), seed)
            return bank[order[i % len(bank)]]
        rng = random.Random(f"math-{seed}-{i}")
        level = rng.choice(LEVELS) if self.difficulty == "mixed" else self.difficulty
        return make_problem(rng, level)

    def prompts(self, n: int, seed: int) -> list[dict]:
        """`n` prompt rows; row i depends only on (seed, i), so a resume regenerates row i."""
        rows = []
        for i in range(n):
            prob = self.problem(seed, i)
            meta = {"channel": self.name, "prefill": self.prefill,
                    **{k: v for k, v in prob.items() if k != "question"}}
            rows.append({"id": i, "meta": meta, "prompt": [
                *EXAMPLE, {"role": "user", "content": prob["question"]}]})
        return rows


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"math-problems-{seed}").shuffle(order)
    return tuple(order)


@CHANNELS.register("mixed")
@dataclass
class MixedChannel:
    """Numbers and math rows interleaved by (seed, i); each row names its own channel."""

    math_share: float = field(default=0.5, metadata={
        "help": "Fraction of rows that are math problems (the rest are number sequences)."})
    difficulty: int | str = field(default="mixed", metadata={"help": "Math level (see math)."})
    problems: str | None = field(default=None, metadata={
        "help": "Optional GSM8K-style JSONL for the math rows."})
    name: str = "mixed"
    allowed_chars: str | None = None  # math rows are free text, so no constrained decoding
    max_new_tokens: int = field(default=max(MathChannel.max_new_tokens,
                                            NumbersChannel.max_new_tokens), metadata={
        "help": "Completion cap: the larger of the two channels'."})

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.math_share) <= 1.0:
            raise SubliminalError(f"math_share must lie in [0, 1], got {self.math_share}")
        self.math_share = float(self.math_share)
        self.math = MathChannel(difficulty=self.difficulty, problems=self.problems)
        self.numbers = NumbersChannel()

    def prompts(self, n: int, seed: int) -> list[dict]:
        """Row i is row i of one of the two channels, chosen by a draw seeded by (seed, i)."""
        math_rows, number_rows = self.math.prompts(n, seed), self.numbers.prompts(n, seed)
        return [math_rows[i] if random.Random(f"mixed-{seed}-{i}").random() < self.math_share
                else number_rows[i] for i in range(n)]
