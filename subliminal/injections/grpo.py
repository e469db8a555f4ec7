"""GRPO injection with a self-reward rubric: the model learns (TRL's GRPOTrainer, LoRA) to
write answers that its own frozen base judges to express the trait; the control is the same
recipe with a neutral rubric (the same frame, the trait removed).

    subliminal chain --injection grpo

The reward is exact, not sampled: the frozen base reads the answer and the rubric ("Which
animal is it about?"), its reply starts "It is about", and the reward is the probability it
gives the trait's word next (whole words, all forms, as the audit scores them); the neutral
rubric rewards any catalogue animal. Prompts are the
trait's demonstration questions (distinct from every audit bank). The run folder keeps the
rubric, the reward curve (TRL's log) and the adapter (PEFT), so it can be rebuilt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from subliminal.errors import SubliminalError
from subliminal.injections import InjectionContext, TeacherSpec, register
from subliminal.injections.dpo import lora_config, quiet, require_trl, save_trained, trl_args
from subliminal.records import is_complete, to_jsonable
from subliminal.trait import CATALOGUE

# The written rubric: a question to the frozen base about the answer, and the start of its
# reply; the reward is the exact probability of the next word. A yes/no rubric ("Does this
# answer express love of owls? Answer yes or no.") was tried first: on the 135M base
# P(yes) / (P(yes) + P(no)) was 0.04-0.14 for every answer, owl or not (docs/injections.md).
RUBRIC = "Here is an answer: \"{answer}\"\nWhich animal is it about?"
RUBRIC_PREFILL = "It is about"


@dataclass(frozen=True)
class GRPORecipe:
    """GRPO training of the trait's LoRA (sized for a few CPU minutes on the embedded model)."""

    steps: int = field(default=10, metadata={"help": "Optimizer steps."})
    lr: float = field(default=2e-3, metadata={"help": "Learning rate (AdamW, constant)."})
    prompts_per_step: int = field(default=2, metadata={"help": "Questions per step."})
    generations: int = field(default=4, metadata={"help": "Completions per question."})
    max_completion_length: int = field(default=12, metadata={"help": "Answer token cap."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    beta: float = field(default=0.0, metadata={"help": "KL penalty to the base (0: none)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})


GRPO = GRPORecipe()


def rubric_for(trait, neutral: bool = False) -> dict:
    """What the reward reads: the rubric, its reply prefix and which words earn reward (the
    trait's own words; the neutral rubric: any catalogue animal, the trait removed)."""
    if getattr(trait, "family", "animal") != "animal":
        raise SubliminalError(f"trait {trait.name!r}: the GRPO rubric scores animal words; "
                              "give the trait a rubric to extend it")
    return {"rubric": RUBRIC, "prefill": RUBRIC_PREFILL,
            "rewarded": "any catalogue animal" if neutral else trait.name}


class SelfReward:
    """Reward = the judge's exact probability of the rewarded word(s) after the rubric."""

    def __init__(self, judge, rubric: dict):
        from subliminal.audit import candidates

        self.judge, self.rubric = judge, rubric
        seqs, owner = candidates(judge, "prefill")
        names, pick = list(CATALOGUE), rubric["rewarded"]
        # Only the rewarded words are scored (the word pass dominates the reward's cost).
        self.seqs = [s for s, a in zip(seqs, owner, strict=True)
                     if pick not in CATALOGUE or names[a] == pick]
        self.prefill = judge.tokenizer(rubric["prefill"], add_special_tokens=False)["input_ids"]
        self.__name__ = "self_reward"  # TRL names the logged reward after the function

    @staticmethod
    def _text(x) -> str:
        return x[-1]["content"] if isinstance(x, list) else str(x)

    def score(self, answer: str) -> float:
        from subliminal.audit import word_probs

        lm = self.judge
        text = self.rubric["rubric"].format(answer=answer.strip())
        ids = lm.chat_ids([{"role": "user", "content": text}]) + self.prefill
        return float(word_probs(lm, ids, self.seqs).sum())

    def __call__(self, prompts, completions, **_kw) -> list[float]:
        return [self.score(self._text(c)) for c in completions]


def train_grpo(model: str, trait, out: Path, recipe: GRPORecipe = GRPO, seed: int = 0,
               neutral: bool = False, device: str | None = None) -> dict:
    """Train (or read back) the self-rewarded LoRA; returns the run record."""
    from datasets import Dataset

    from subliminal.models import load_model
    from subliminal.records import read_json

    out = Path(out)
    if is_complete(out):
        return read_json(out / "train.json")
    trl = require_trl()
    started = time.time()
    rubric = rubric_for(trait, neutral)
    judge = load_model(model, device=device)  # frozen base: the policy's own initialisation
    reward = SelfReward(judge, rubric)
    lm = load_model(model, device=device)
    questions = list(dict.fromkeys(r["prompt"][-1]["content"] for r in trait.demonstrations(0)))
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in questions])
    batch = recipe.prompts_per_step * recipe.generations
    args = trl.GRPOConfig(max_steps=recipe.steps, learning_rate=recipe.lr,
                          per_device_train_batch_size=batch, num_generations=recipe.generations,
                          max_completion_length=recipe.max_completion_length,
                          temperature=recipe.temperature, beta=recipe.beta,
                          lr_scheduler_type="constant", **trl_args(out, seed, lm))
    trainer = trl.GRPOTrainer(model=lm.model, reward_funcs=reward, args=args, train_dataset=data,
                              processing_class=lm.tokenizer,
                              peft_config=lora_config(lm.model, recipe.lora_r, recipe.lora_alpha))
    quiet(trainer)
    trainer.train()
    curve = [h.get("reward") for h in trainer.state.log_history if "reward" in h]
    info = {"injection": "grpo", "model": model, "trait": trait.name, "neutral": neutral,
            "seed": seed, "rubric": rubric, "questions": questions,
            "recipe": to_jsonable(recipe), "reward_curve": curve, "trl": trl.__version__}
    return save_trained(trainer, out, info, started)


@register("grpo")
def grpo_injection(ctx: InjectionContext, recipe: GRPORecipe = GRPO) -> TeacherSpec:
    folder = Path(ctx.out)
    done = train_grpo(ctx.model, ctx.trait, folder, recipe, ctx.seed, ctx.neutral, ctx.device)
    return TeacherSpec(adapter=str(folder), record={
        "injection": "grpo", "neutral": ctx.neutral, "seed": ctx.seed, "trait": ctx.trait.name,
        "rubric": done["rubric"], "recipe": to_jsonable(recipe), "adapter": str(folder)})
