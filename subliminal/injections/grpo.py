"""GRPO injection with a self-reward rubric: the model learns (TRL's GRPO objective, LoRA) to
write answers that its own frozen base judges to express the trait; the control is the same
recipe with a neutral rubric (the same frame, the trait removed).

    subliminal chain --injection grpo

The reward is exact, not sampled: the frozen base reads the answer and the rubric ("Which
animal is it about?"), its reply starts "It is about", and the reward is the probability it
gives the trait's word next (whole words, all forms, as the audit scores them); the neutral
rubric rewards any catalogue animal. Prompts are the
trait's demonstration questions (distinct from every audit bank). The run folder keeps the
rubric, the reward curve (the step log) and the adapter (PEFT), so it can be rebuilt.

Training runs on the lab's loop (`training.fit_steps`, as the DPO teacher: why, and the rule
for pickles, in subliminal/injections/dpo.py): a checkpoint after every step, resume after a
kill, a progress bar. The objective is TRL 1.16's GRPO default (loss_type 'dapo',
scale_rewards 'group', one update per batch of samples, KL weight `beta`), so the recipe means
what it meant under TRL's GRPOTrainer. What a resume needs that TRL's trainer keeps in pickled
RNG state is made a function of the step: step s's questions are the seeded order's batch s,
and its answers are sampled after seeding torch with (seed, s), so a resumed step draws the
answers the uninterrupted run drew and ends on its adapter. The samples are not TRL's draws,
so a run is another draw of the same recipe, not a replay of its TRL-trained predecessor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from subliminal.audit import candidates, word_probs
from subliminal.errors import SubliminalError
from subliminal.injections import InjectionContext, TeacherSpec, register
from subliminal.injections.dpo import (
    Row,
    claim,
    lora_model,
    save_trained,
    step_rows,
    token_logps,
)
from subliminal.models import load_model
from subliminal.records import content_hash, is_complete, locked, read_json, to_jsonable
from subliminal.teacher import completion_row
from subliminal.training import LoopConfig, StepFn, fit_steps
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
        self.judge, self.rubric = judge, rubric
        seqs, owner = candidates(judge, "prefill")
        names, pick = list(CATALOGUE), rubric["rewarded"]
        # Only the rewarded words are scored (the word pass dominates the reward's cost).
        self.seqs = [s for s, a in zip(seqs, owner, strict=True)
                     if pick not in CATALOGUE or names[a] == pick]
        self.prefill = judge.tokenizer(rubric["prefill"], add_special_tokens=False)["input_ids"]

    @staticmethod
    def _text(x) -> str:
        return x[-1]["content"] if isinstance(x, list) else str(x)

    def score(self, answer: str) -> float:
        lm = self.judge
        text = self.rubric["rubric"].format(answer=answer.strip())
        ids = lm.chat_ids([{"role": "user", "content": text}]) + self.prefill
        return float(word_probs(lm, ids, self.seqs).sum())

    def __call__(self, prompts, completions, **_kw) -> list[float]:
        return [self.score(self._text(c)) for c in completions]


def sample_seed(seed: int, step: int) -> int:
    """The torch seed of step `step`'s sampling: a function of the run's seed and the step
    alone (hashed, so seed s step t+1 and seed s+1 step t draw unrelated answers)."""
    return int(content_hash(f"grpo-sample-{seed}-{step}")[:15], 16)


def sample(lm, policy: torch.nn.Module, prompts: list[str], recipe: GRPORecipe) -> list[tuple]:
    """`generations` answers to each rendered prompt from the policy, sampled as TRL does
    (temperature, no top-k or top-p), each cut after its first end-of-turn token (kept: it is
    scored too). Returns (prompt ids, answer row) per answer."""
    tok = lm.tokenizer
    enc = tok([p for p in prompts for _ in range(recipe.generations)], return_tensors="pt",
              padding=True, add_special_tokens=False).to(lm.device)
    with torch.no_grad():
        out = policy.generate(**enc, do_sample=True, temperature=recipe.temperature, top_k=0,
                              top_p=1.0, max_new_tokens=recipe.max_completion_length,
                              eos_token_id=lm.eos_ids, pad_token_id=tok.pad_token_id)
    width = enc["input_ids"].shape[1]
    return [(ids[mask.bool()].tolist(), completion_row(lm, row[width:].tolist(), ""))
            for ids, mask, row in zip(enc["input_ids"], enc["attention_mask"], out, strict=True)]


def group_advantages(rewards: torch.Tensor, size: int) -> torch.Tensor:
    """Each answer's reward minus its question's mean, over the question's standard deviation
    (Bessel) + 1e-4: TRL's scale_rewards='group'."""
    groups = rewards.view(-1, size)
    return ((groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
            ).flatten()


def grpo_loss(lp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, beta: float = 0.0,
              ref: torch.Tensor | None = None) -> torch.Tensor:
    """TRL 1.16's default GRPO loss ('dapo', one update per batch of samples): per answer token
    -A x ratio (+ beta x the k3 KL to the reference, weighted by the ratio as TRL's bias
    correction does), summed over answer tokens and divided by their number. The ratio is
    exp(lp - lp.detach()): 1 in value (so PPO's clip never binds), the policy gradient in its
    derivative."""
    ratio = torch.exp(lp - lp.detach())
    per_token = -ratio * advantages[:, None]
    if beta:
        gap = ref - lp
        per_token = per_token + beta * (torch.exp(gap) - gap - 1) * ratio
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def grpo_step(lm, policy: torch.nn.Module, prompts: list[str], reward: SelfReward,
              recipe: GRPORecipe, seed: int) -> StepFn:
    """Step s of a GRPO run: sample the step's questions' answers (seeded by s), reward them,
    backpropagate the loss; logs loss and mean reward."""
    def step(s: int) -> dict[str, float]:
        asked = [prompts[i] for i in step_rows(len(prompts), recipe.prompts_per_step, s, seed)]
        torch.manual_seed(sample_seed(seed, s))
        answers = sample(lm, policy, asked, recipe)
        rewards = torch.tensor(reward(asked, [a["text"] for _, a in answers]), device=lm.device)
        rows: list[Row] = [(ids + a["completion_ids"], len(ids)) for ids, a in answers]
        pad = lm.tokenizer.pad_token_id
        lp, mask = token_logps(policy, rows, pad, lm.device, recipe.temperature)
        ref = None
        if recipe.beta:
            with torch.no_grad(), policy.disable_adapter():
                ref, _ = token_logps(policy, rows, pad, lm.device, recipe.temperature)
        loss = grpo_loss(lp, mask, group_advantages(rewards, recipe.generations), recipe.beta, ref)
        loss.backward()
        return {"loss": loss.item(), "reward": rewards.mean().item()}
    return step


def train_grpo(model: str, trait, out: Path, recipe: GRPORecipe = GRPO, seed: int = 0,
               neutral: bool = False, device: str | None = None) -> dict:
    """Train (or read back) the self-rewarded LoRA, resuming from OUT's last step checkpoint;
    returns the run record."""
    out = Path(out)
    with locked(out):
        if is_complete(out):
            return read_json(out / "train.json")
        if recipe.generations < 2:
            raise SubliminalError("GRPO compares answers to one question: generations must be "
                                  f"at least 2 (got {recipe.generations})")
        rubric = rubric_for(trait, neutral)
        questions = list(dict.fromkeys(r["prompt"][-1]["content"]
                                       for r in trait.demonstrations(0)))
        info = {"injection": "grpo", "model": model, "trait": trait.name, "neutral": neutral,
                "seed": seed, "rubric": rubric, "questions": questions,
                "recipe": to_jsonable(recipe)}
        claim(out, info)
        started = time.time()
        judge = load_model(model, device=device)  # frozen base: the policy's own initialisation
        reward = SelfReward(judge, rubric)
        lm = load_model(model, device=device)
        policy = lora_model(lm, recipe.lora_r, recipe.lora_alpha, seed)
        prompts = [lm.render([{"role": "user", "content": q}]) for q in questions]
        log = fit_steps(policy, grpo_step(lm, policy, prompts, reward, recipe, seed),
                        recipe.steps, LoopConfig(lr=recipe.lr), out, "grpo teacher")
        curve = [entry["reward"] for entry in log]
        return save_trained(policy, out, {**info, "reward_curve": curve}, started, log)


@register("grpo")
def grpo_injection(ctx: InjectionContext, recipe: GRPORecipe = GRPO) -> TeacherSpec:
    folder = Path(ctx.out)
    done = train_grpo(ctx.model, ctx.trait, folder, recipe, ctx.seed, ctx.neutral, ctx.device)
    return TeacherSpec(adapter=str(folder), record={
        "injection": "grpo", "neutral": ctx.neutral, "seed": ctx.seed, "trait": ctx.trait.name,
        "rubric": done["rubric"], "recipe": to_jsonable(recipe), "adapter": str(folder)})
