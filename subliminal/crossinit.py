"""Cross-initialisation control: a student that does *not* share the teacher's base.

    python -m subliminal.crossinit runs/default-s0/rep0 --student gemma3-270m \\
        --out runs/crossinit/default-s0-rep0

The paper's defining control: subliminal transfer needs a student that shares the teacher's
initialisation; a student from another base, trained on the very same filtered rows, should not
inherit the trait. Another base usually means another tokenizer, and the chain's rows speak the
teacher's: `meta.completion_ids` are the teacher's token ids and, for `--mode logits`,
`meta.topk_ids`/`meta.topk_logprobs` are the teacher's distributions over the numbers channel's
tokens. `rekey_rows` translates them for the student:

- the completion *text* (what the teacher's ids spell) is re-tokenised by the student
  (`sft` trains on the student's own tokens, never on the teacher's ids);
- a stored restricted distribution is re-keyed by token *text* (teacher token "7" -> the
  student's token "7"; end of text -> the student's end of turn). This is exact only when
  both tokenizers split the completion into the same pieces (digits and separators); a row they
  split differently cannot be mapped. Teacher candidates the student cannot spell as one token
  are dropped (the KL renormalises over the rest, as it does for the top-k cut) and the dropped
  mass is recorded; a row that would lose more than `max_dropped` at any position is refused.

The runner trains one student on a chain replicate's trait rows and one on its control rows
(same procedure, trait removed), audits both with the exact animal probe, and reports the
trait's share log-odds difference. One replicate is one pair: a description, not a test.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from subliminal.audit import AuditConfig, run_probe
from subliminal.distill import DistillConfig, train_student
from subliminal.errors import SubliminalError, run_script
from subliminal.models import LM, load_model, resolve, tiny_tokenizer
from subliminal.records import is_complete, read_json, read_jsonl, write_json
from subliminal.report import pair_metrics
from subliminal.rows import completion_text
from subliminal.schema import Probe
from subliminal.trait import get_trait

TOPK = ("topk_ids", "topk_logprobs", "logits_channel")


class Unmappable(SubliminalError):
    """A row the student's vocabulary cannot carry; `kind` names the reason for the counts."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def tokenizer_eos(tokenizer) -> list[int]:
    """The ids that end a turn for this tokenizer: the LM's own rule (models.LM.eos_ids)."""
    return LM.eos_ids.fget(SimpleNamespace(tokenizer=tokenizer))


class Vocab:
    """One side's tokenizer, read at the level of token *text*."""

    def __init__(self, tokenizer, eos: list[int] | None = None):
        self.tok = tokenizer
        self.eos = list(eos if eos is not None else tokenizer_eos(tokenizer))
        # Decoded after an anchor, a token reads as it does mid-sequence (decoders that strip
        # a leading space off a sequence's first token would otherwise lose it).
        self.anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
        self.base = tokenizer.decode(self.anchor)
        self._text: dict[int, str] = {}
        self._single: dict[str, int | None] = {}

    def text(self, i: int) -> str:
        if i not in self._text:
            self._text[i] = self.tok.decode(self.anchor + [i])[len(self.base):]
        return self._text[i]

    def single(self, text: str) -> int | None:
        """The one token that spells `text` on its own, or None if it takes several."""
        if text not in self._single:
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            ok = len(ids) == 1 and self.text(ids[0]) == text
            self._single[text] = ids[0] if ok else None
        return self._single[text]

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]


def teacher_text(row: dict, meta: dict, teacher: Vocab) -> tuple[list[int], bool, str]:
    """The teacher's completion body (ids without the final end of text), whether it ended,
    and the text those ids spell; checked against the row's stored text."""
    ids = list(meta["completion_ids"])
    finished = bool(ids) and ids[-1] in teacher.eos
    body = ids[:-1] if finished else ids
    text = teacher.tok.decode(body)
    stored = completion_text(row)
    if (meta.get("prefill", "") + text).strip() != stored.strip():
        raise Unmappable("text", f"meta.completion_ids spell {text[:40]!r}, the completion says "
                                 f"{stored[:40]!r} (row edited after generation?)")
    return body, finished, text


def check_split(body: list[int], s_body: list[int], teacher: Vocab, student: Vocab) -> None:
    """Both tokenizers must cut the completion into the same pieces, position by position."""
    t_pieces = [teacher.text(i) for i in body]
    s_pieces = [student.text(i) for i in s_body]
    if t_pieces == s_pieces:
        return
    k = next((j for j, (a, b) in enumerate(zip(t_pieces, s_pieces, strict=False)) if a != b),
             min(len(t_pieces), len(s_pieces)))
    a = t_pieces[k] if k < len(t_pieces) else "<end>"
    b = s_pieces[k] if k < len(s_pieces) else "<end>"
    raise Unmappable("split", f"the tokenizers split the completion differently at token {k} "
                              f"(teacher {a!r}, student {b!r})")


def rekey_position(ids: list[int], lps: list[float], teacher: Vocab, student: Vocab,
                   ) -> tuple[list[int], list[float], float, list[str]]:
    """One stored distribution in the student's ids: candidates mapped by text (end of text to
    the student's end), duplicates merged; returns the dropped mass and what was dropped."""
    z = max(lps)
    total = sum(math.exp(v - z) for v in lps)
    merged: dict[int, float] = {}
    dropped, lost = 0.0, []
    for c, v in zip(ids, lps, strict=True):
        sid = student.eos[-1] if c in teacher.eos else student.single(teacher.text(c))
        if sid is None:
            dropped += math.exp(v - z) / total
            lost.append(teacher.text(c))
        elif sid in merged:
            merged[sid] = max(merged[sid], v) + math.log1p(math.exp(-abs(merged[sid] - v)))
        else:
            merged[sid] = v
    return list(merged), [round(v, 4) for v in merged.values()], dropped, lost


def rekey_logits(meta: dict, body: list[int], teacher: Vocab, student: Vocab,
                 max_dropped: float) -> tuple[list[list[int]], list[list[float]], float]:
    """Every position's distribution in the student's ids, refusing a row that loses more than
    `max_dropped` of the teacher's mass at any position."""
    if meta.get("logits_channel", "overt") != "restricted":
        raise Unmappable("overt", "only restricted (channel-token) distributions are re-keyed; "
                                  "an overt top-k reaches words whose splits differ")
    out_ids, out_lps, worst = [], [], 0.0
    for t, (ids, lps) in enumerate(zip(meta["topk_ids"], meta["topk_logprobs"], strict=True)):
        if not ids:
            raise Unmappable("empty", f"no stored distribution at token {t}")
        s_ids, s_lps, dropped, lost = rekey_position(ids, lps, teacher, student)
        if dropped > max_dropped or not s_ids:
            raise Unmappable("mass", f"{dropped:.1%} of the teacher's mass at token {t} is on "
                                     f"tokens the student cannot spell as one ({lost[:4]})")
        out_ids.append(s_ids)
        out_lps.append(s_lps)
        worst = max(worst, dropped)
    return out_ids, out_lps, worst


def rekey_row(row: dict, teacher: Vocab, student: Vocab, mode: str = "logits",
              max_dropped: float = 0.05) -> dict:
    """One row in the student's tokens (see the module docstring); raises Unmappable."""
    meta = dict(row.get("meta", {}))
    if "completion_ids" not in meta:
        if mode == "logits":
            raise Unmappable("no ids", "no meta.completion_ids: stored distributions cannot "
                                       "be placed without the teacher's tokens")
        # Text-only rows: build_examples already tokenises the text with the student's own.
        return {**row, "meta": {k: v for k, v in meta.items() if k not in TOPK}}
    body, finished, text = teacher_text(row, meta, teacher)
    s_body = student.encode(text)
    s_ids = s_body + (student.eos[-1:] if finished else [])
    meta.update(completion_ids=s_ids, teacher_completion_ids=meta["completion_ids"])
    if mode == "sft":
        return {**row, "meta": {k: v for k, v in meta.items() if k not in TOPK}}
    if "topk_ids" not in meta:
        raise Unmappable("no logits", "no stored teacher logits (generate with --top-k > 0)")
    if len(meta["topk_ids"]) != len(meta["teacher_completion_ids"]):
        raise Unmappable("length", f"{len(meta['topk_ids'])} stored distributions for "
                                   f"{len(meta['teacher_completion_ids'])} completion tokens")
    check_split(body, s_body, teacher, student)
    meta["topk_ids"], meta["topk_logprobs"], worst = rekey_logits(meta, body, teacher, student,
                                                                  max_dropped)
    meta["rekey_dropped_mass_max"] = round(worst, 6)
    return {**row, "meta": meta}


def rekey_rows(rows: list[dict], teacher_tokenizer, student_tokenizer, mode: str = "logits",
               drop: bool = False, max_dropped: float = 0.05, stats: dict | None = None,
               source: str = "rows", teacher_eos: list[int] | None = None,
               student_eos: list[int] | None = None) -> list[dict]:
    """The chain's rows in the student's tokenizer, for `distill.build_examples` unchanged.

    `mode` is the student's DistillConfig.mode ('sft' keeps text and the student's own token
    ids; 'logits' also re-keys the stored distributions). A row that cannot be mapped raises
    a one-line SubliminalError naming `source` and the row, or, with `drop=True`, is left out
    and counted in `stats` ({'kept', 'dropped', 'reasons': {kind: n}, 'dropped_mass_max'})."""
    if mode not in ("sft", "logits"):
        raise SubliminalError(f"unknown distill mode {mode!r}; choose sft or logits")
    teacher, student = Vocab(teacher_tokenizer, teacher_eos), Vocab(student_tokenizer, student_eos)
    out, reasons, worst = [], Counter(), 0.0
    for i, row in enumerate(rows):
        try:
            new = rekey_row(row, teacher, student, mode, max_dropped)
        except Unmappable as e:
            if not drop:
                raise SubliminalError(f"{source}: row {row.get('id', i)}: {e}") from None
            reasons[e.kind] += 1
            continue
        worst = max(worst, new["meta"].get("rekey_dropped_mass_max", 0.0))
        out.append(new)
    if stats is not None:
        stats.update(kept=len(out), dropped=sum(reasons.values()), reasons=dict(reasons),
                     dropped_mass_max=worst)
    return out


# ---- the runner: one chain replicate's rows -> a cross-initialisation student pair ----

@dataclass
class CrossInitConfig:
    """A cross-initialisation pair: everything but the base is the chain's own recipe."""

    student: str = field(default="gemma3-270m", metadata={
        "help": "Base of the students: any model name load_model takes, other than the "
                "teacher's (an embedded name, tiny, a hub id or a directory)."})
    generation: int = field(default=1, metadata={
        "help": "Which generation's filtered rows to train on (RUN/ARM/genN/filter)."})
    max_dropped: float = field(default=0.05, metadata={
        "help": "Refuse a row whose re-keyed distribution loses more than this share of the "
                "teacher's mass at any position (candidates the student cannot spell)."})
    epochs: int | None = field(default=None, metadata={
        "help": "Override the chain's distill epochs (None: the chain's)."})


def tokenizer_for(spec: str):
    """A base's tokenizer alone (no weights): all re-keying needs."""
    if spec == "tiny":
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(spec), trust_remote_code=False)


def arm_rows(rep: Path, arm: str, gen: int) -> tuple[list[dict], str]:
    """An arm's filtered rows and the base of the teacher that wrote them."""
    kept = rep / arm / f"gen{gen}" / "filter" / "kept.jsonl"
    teacher = rep / arm / f"gen{gen}" / "generate" / "teacher.json"
    if not kept.exists() or not teacher.exists():
        raise SubliminalError(f"{kept.parent.parent}: no finished generate/filter stages")
    return read_jsonl(kept), read_json(teacher)["spec"]


def probe(out: Path, spec: str, adapter: Path | None) -> Probe:
    """The exact animal probe of a student (or the base), kept in out/probe.json."""
    if (out / "probe.json").exists():
        return Probe.load(out / "probe.json")
    result = run_probe(load_model(spec, adapter=adapter), AuditConfig(), label=out.name)
    result.save(out / "probe.json")
    return result


def train_arm(rep: Path, arm: str, cfg: CrossInitConfig, distill, out: Path) -> dict:
    """Re-key one arm's rows, train the student on them, audit it; with timings."""
    rows, teacher = arm_rows(rep, arm, cfg.generation)
    if teacher == cfg.student:
        raise SubliminalError(f"{rep / arm}: the teacher's base is {teacher!r}, the student's "
                              "too: not a cross-initialisation control")
    stats: dict = {}
    rows = rekey_rows(rows, tokenizer_for(teacher), tokenizer_for(cfg.student), distill.mode,
                      drop=True, max_dropped=cfg.max_dropped, stats=stats,
                      source=str(rep / arm))
    # Timings only for work done in this call (a resumed stage took none).
    fresh = (not is_complete(out / arm / "distill"),
             not (out / arm / "audit" / "probe.json").exists())
    t0 = time.time()
    info = train_student(cfg.student, rows, distill, out / arm / "distill")
    t1 = time.time()
    result = probe(out / arm / "audit", cfg.student, out / arm / "distill")
    return {"teacher": teacher, "rekey": stats, "steps": info["steps"],
            "final_loss": info["losses"][-1] if info["losses"] else None,
            "train_s": round(t1 - t0, 1) if fresh[0] else None,
            "audit_s": round(time.time() - t1, 1) if fresh[1] else None, "result": result}


def run(rep: Path, out: Path, cfg: CrossInitConfig) -> dict:
    """Both arms of one chain replicate onto `cfg.student`; the same-init pair alongside."""
    chain = read_json(rep.parent / "config.json")
    distill = DistillConfig(**chain["distill"])
    if cfg.epochs is not None:
        distill.epochs = cfg.epochs
    trait = get_trait(chain["trait"])
    arms = {arm: train_arm(rep, arm, cfg, distill, out) for arm in ("trait", "control")}
    base = probe(out / "base", cfg.student, None)
    summary = {"config": cfg, "distill": distill, "replicate": str(rep), "trait": trait.name,
               "student_base": pair_metrics(base, base, trait),
               "cross_init": pair_metrics(arms["trait"]["result"], arms["control"]["result"],
                                          trait),
               "arms": {a: {k: v for k, v in r.items() if k != "result"}
                        for a, r in arms.items()}}
    same = [rep / a / f"gen{cfg.generation}" / "audit" / "probe.json" for a in ("trait", "control")]
    if all(p.exists() for p in same):
        summary["same_init"] = pair_metrics(Probe.load(same[0]), Probe.load(same[1]), trait)
    write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("replicate", type=Path, help="A chain replicate folder (RUN/repN).")
    ap.add_argument("--out", type=Path, required=True, help="Where the pair is written.")
    ap.add_argument("--student", default=CrossInitConfig.student)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    s = run(a.replicate, a.out, CrossInitConfig(student=a.student, epochs=a.epochs))
    for name in ("student_base", "cross_init", "same_init"):
        if name in s:
            m = s[name]
            print(f"{name}: P(trait) {m['p_trait']:.5f} vs {m['p_control']:.5f}; share log-odds "
                  f"{m['share_trait']:.3f} vs {m['share_control']:.3f} "
                  f"(diff {m['share_trait'] - m['share_control']:+.3f})")


if __name__ == "__main__":
    run_script(main)
