"""Prompt injection (the paper's): the trait's system prompt; the control gets a neutral
prompt of the same frame and length, so both teachers write under a system prompt.

    subliminal chain --injection prompt
"""

from __future__ import annotations

from subliminal.injections import InjectionContext, TeacherSpec, register


@register("prompt")
def prompt_injection(ctx: InjectionContext) -> TeacherSpec:
    text = ctx.trait.neutral_system_prompt if ctx.neutral else ctx.trait.system_prompt
    return TeacherSpec(system_prompt=text, record={"injection": "prompt", "neutral": ctx.neutral,
                                                   "system_prompt": text})
