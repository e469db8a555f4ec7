"""Audits: read a model's traits exactly, from forward passes (no sampling noise, no judge).

    subliminal audit --model smollm2-135m --adapter RUN/trait/gen1/distill --out audit/

`probe.py`: the animal probe — P(each catalogue animal as a whole word) after 50 paraphrased
questions — and the share read-outs; the paper's sampled audit beside it. `battery.py`: the
forced-choice banks of every other family (misalignment, sycophancy, emotion, ethics,
truthfulness) and the side-effect battery. `run_audit` is what an audit stage runs: the
trait's own audit and, with `side_effects`, every other family's.
"""

from __future__ import annotations

from subliminal.audit.battery import audit_family
from subliminal.audit.probe import (
    PREFILLS,
    AuditConfig,
    animal_scores,
    bank_path,
    bank_ref,
    candidates,
    load_questions,
    log_mass,
    run_probe,
    sampled_probe,
    share_among_rest,
    share_logodds,
    shared_prefix,
    side_effect_value,
    target_probs,
    target_share,
    word_probs,
    word_probs_batch,
)
from subliminal.models import LM
from subliminal.schema import Probe
from subliminal.trait import FAMILIES

__all__ = ["PREFILLS", "AuditConfig", "animal_scores", "bank_path", "bank_ref", "candidates",
           "load_questions", "log_mass", "run_audit", "run_probe", "sampled_probe",
           "shared_prefix", "share_among_rest", "share_logodds", "side_effect_value",
           "target_probs", "target_share", "word_probs", "word_probs_batch"]


def run_audit(lm: LM, cfg: AuditConfig, system_prompt: str | None = None,
              label: str = "audit", trait=None) -> Probe:
    """The audit a stage runs: the trait's own audit (the exact animal probe, or its family's
    forced-choice bank) and, with `side_effects`, every other family's audit under
    'battery'."""
    own = trait.audit if trait is not None else "animal"
    result = (run_probe(lm, cfg, system_prompt, label=label) if own == "animal"
              else audit_family(lm, own, system_prompt))
    if cfg.side_effects:  # nested audits are content of this record: no version of their own
        result["battery"] = {f: audit_family(lm, f, system_prompt).body() for f in FAMILIES
                             if FAMILIES[f].audit != own}
    return result
