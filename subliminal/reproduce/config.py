"""The config of `subliminal reproduce aux-logits` (no torch import: the CLI builds fast).

    subliminal reproduce aux-logits --seeds 10
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AuxLogitsConfig:
    """Everything that decides the numbers of `reproduce aux-logits` (stored as config.json)."""

    data: str | None = field(default=None, metadata={
        "help": "Dataset: none = scikit-learn 8x8 digits; a directory of the 4 MNIST IDX files"
                " (optionally .gz); or an .npz with x_train, y_train, x_test, y_test."})
    seeds: int = field(default=10, metadata={
        "help": "Number of seeds (independent teacher/student sets), trained side by side."})
    seed: int = field(default=0, metadata={
        "help": "First seed; the run uses seed, seed+1, ..., seed+seeds-1."})
    hidden: int = field(default=256, metadata={"help": "Width of both hidden layers."})
    m: int = field(default=3, metadata={
        "help": "Number of auxiliary logits appended to the 10 class logits."})
    loss: str = field(default="mse", metadata={
        "help": "Distillation loss: mse (raw logits, robust) or kl (softmax, paper-like;"
                " needs m >= 2)."})
    lr: float = field(default=1e-3, metadata={"help": "Student Adam learning rate."})
    epochs: int = field(default=5, metadata={"help": "Student epochs over fresh noise."})
    noise: int = field(default=60_000, metadata={
        "help": "Uniform-noise inputs per student epoch (drawn batch by batch, never stored)."})
    batch: int = field(default=256, metadata={"help": "Student batch size."})
    teacher_epochs: int = field(default=30, metadata={"help": "Teacher training epochs."})
    teacher_lr: float = field(default=1e-3, metadata={"help": "Teacher Adam learning rate."})
    teacher_batch: int = field(default=64, metadata={"help": "Teacher batch size."})
    generations: int = field(default=1, metadata={
        "help": "Chain length: student k (same init) teaches student k+1 through aux logits."})
    threads: int = field(default=1, metadata={
        "help": "torch CPU threads (1 is fastest for these small matmuls on a shared CPU)."})
