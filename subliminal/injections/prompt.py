"""Prompt injection (the paper's): the trait's system prompt; the control gets a neutral
prompt of the same frame and length, so both teachers write under a system prompt.

    subliminal chain --injection prompt

Replicate seed s takes paraphrase s mod n of the trait's prompts (and the same-numbered
neutral paraphrase for the control), so prompt-injected replicates are independent wordings
rather than one prompt repeated; seed 0 is the paper's wording.
"""

from __future__ import annotations

from subliminal.injections import InjectionContext, TeacherSpec, register


def wording(options: tuple[str, ...], seed: int) -> tuple[str, int]:
    """The paraphrase a replicate seed uses, and its index."""
    k = seed % len(options)
    return options[k], k


@register("prompt")
def prompt_injection(ctx: InjectionContext) -> TeacherSpec:
    """The replicate's wording of the trait's prompt (or of the neutral one, for the twin)."""
    text, k = wording(ctx.trait.neutral_prompts if ctx.neutral else ctx.trait.prompts, ctx.seed)
    return TeacherSpec(system_prompt=text, record={"injection": "prompt", "neutral": ctx.neutral,
                                                   "paraphrase": k, "system_prompt": text})
