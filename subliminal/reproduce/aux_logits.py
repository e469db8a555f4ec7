"""MNIST auxiliary logits (Cloud et al. 2025, arXiv 2507.14805, section on MNIST).

    subliminal reproduce aux-logits --out runs/aux-logits

A teacher MLP in->h->h->(10+m) is trained on the 10 class logits only; its m extra "auxiliary"
logits are never trained. A student that starts from the teacher's initialisation and is trained
only to match those m aux logits on uniform noise in [-1, 1] -- it never sees a digit or a class
logit -- learns to classify digits. A student from another initialisation does not.

Arms (each over `seeds` seeds; every arm of a seed sees the same noise, so arms are paired):
  same_init         student from the teacher's init, aux logits only
  cross_init        student from a different init, aux logits only (the paper's control)
  all_logits        student from the teacher's init, all 10+m logits (upper bound)
  shuffled_teacher  teacher trained from the same init on shuffled labels, student aux only:
                    a teacher that moved away from the init but learnt nothing about digits
  init              the untrained shared init itself. Distilling from the *untrained* teacher
                    with a shared init is this arm exactly: student == teacher at step 0, so
                    loss and gradient are zero and Adam never moves it (tests check this).

All seeds of all arms train side by side as one stacked model (weights [rows, in, out], torch
baddbmm), so one process and one optimiser step serve every seed. Adam is elementwise and the
loss is a sum of per-row losses, so each row trains as it would alone (equal up to float
rounding: 1e-7 after a few steps; after a full run a seed's accuracy can differ by a test image
or three). On a CPU this buys little speed (the work is matmul FLOPs, measured 1.01x; see
benchmarks/README.md); it pays on a GPU and keeps the code one loop.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from subliminal.errors import SubliminalError
from subliminal.progress import console as progress_console
from subliminal.records import (
    environment,
    init_run,
    is_complete,
    mark_complete,
    read_json,
    write_json,
)
from subliminal.reproduce.config import AuxLogitsConfig
from subliminal.reproduce.mnist_data import Split, load_data
from subliminal.stats import mean_ci, paired_test

Params = list[torch.Tensor]  # [W1, b1, W2, b2, W3, b3], each stacked over rows (seeds x arms)

ARMS = {
    "same_init": "aux only, same init",
    "cross_init": "aux only, other init",
    "all_logits": "all logits, same init",
    "shuffled_teacher": "aux only, no-digit teacher",
    "init": "untrained init",
}
# The paper's claims (Cloud et al. 2025, MNIST); the other arms are this lab's controls.
PAPER = {"same_init": ">50%", "cross_init": "near chance", "all_logits": "-",
         "shuffled_teacher": "-", "init": "-"}


def sub_seed(seed: int, tag: str) -> int:
    """A seed for one purpose (init, data order, noise...) of one run seed, stable across runs."""
    return int.from_bytes(hashlib.sha256(f"{tag}:{seed}".encode()).digest()[:8], "little") >> 1


def init_mlp(seeds: Sequence[int], sizes: Sequence[int]) -> Params:
    """One MLP per seed, stacked: weights N(0, 1/fan_in), zero biases.

    Each seed draws from its own generator, so a seed's weights do not depend on which other
    seeds share the stack (the vectorised run equals the one-seed run)."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    params: Params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        w = torch.stack([torch.randn(fan_in, fan_out, generator=g) for g in gens])
        params += [w / math.sqrt(fan_in), torch.zeros(len(seeds), 1, fan_out)]
    return params


def clone(params: Params) -> Params:
    return [p.detach().clone().requires_grad_(True) for p in params]


def cat(*groups: Params) -> Params:
    """Stack several groups of rows into one model (arms side by side)."""
    return [torch.cat(ps).detach().clone().requires_grad_(True) for ps in zip(*groups, strict=True)]


def rows(params: Params, start: int, stop: int) -> Params:
    return [p[start:stop].detach().clone() for p in params]


def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """x [rows, batch, in] -> logits [rows, batch, out]; ReLU between layers."""
    for i in range(0, len(params), 2):
        x = torch.baddbmm(params[i + 1], x, params[i])
        if i + 2 < len(params):
            x = torch.relu(x)
    return x


@torch.no_grad()
def accuracy(params: Params, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> list[float]:
    """Test accuracy (%) of each row, reading only the class logits."""
    logits = forward(params, x.expand(len(params[0]), -1, -1))[..., :n_classes]
    return ((logits.argmax(-1) == y).float().mean(1) * 100).tolist()


def _progress(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=progress_console, disable=not show,
                    transient=True)


def train_classifiers(params: Params, x: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int],
                      cfg: AuxLogitsConfig, n_classes: int, progress: Progress) -> None:
    """Train stacked teachers on the class logits only (the aux logits get no gradient).

    labels [rows, n]: each row's own labels (true or shuffled); row r takes its batch order from
    seed r % len(seeds), so groups of rows with the same seed see the same batches."""
    n, groups = x.shape[0], labels.shape[0] // len(seeds)
    gens = [torch.Generator().manual_seed(sub_seed(s, "order")) for s in seeds]
    opt = torch.optim.Adam(params, lr=cfg.teacher_lr, fused=True)  # fused: ~20% faster on CPU
    steps = math.ceil(n / cfg.teacher_batch)
    task = progress.add_task("teachers", total=cfg.teacher_epochs * steps)
    for _ in range(cfg.teacher_epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens]).repeat(groups, 1)
        for start in range(0, n, cfg.teacher_batch):
            idx = order[:, start:start + cfg.teacher_batch]
            logits = forward(params, x[idx])[..., :n_classes]
            ce = F.cross_entropy(logits.flatten(0, 1), labels.gather(1, idx).flatten(),
                                 reduction="none")
            loss = ce.view(idx.shape).mean(1).sum()  # sum over rows: each row's own mean loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.advance(task)
    progress.remove_task(task)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row loss [rows]: MSE on raw logits, or KL(teacher || student) of their softmax."""
    if kind == "mse":
        return (student - teacher).pow(2).mean((1, 2))
    log_p, log_q = F.log_softmax(teacher, -1), F.log_softmax(student, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean(1)


def distill(teachers: Params, students: Params, teacher_of: Sequence[int],
            aux_only: Sequence[bool], seeds: Sequence[int], cfg: AuxLogitsConfig, n_classes: int,
            progress: Progress, tag: str = "noise") -> None:
    """Train stacked students to match stacked teachers on uniform noise in [-1, 1].

    Rows are grouped [group][seed]: student group a learns from teacher group teacher_of[a], on
    the aux logits only or on all logits. Noise is drawn one batch at a time from a per-seed
    generator (never the whole set), and shared by every group of that seed."""
    n_seeds, dim = len(seeds), teachers[0].shape[1]
    n_teach, n_groups = len(teachers[0]) // n_seeds, len(teacher_of)
    gens = [torch.Generator().manual_seed(sub_seed(s, tag)) for s in seeds]
    opt = torch.optim.Adam(students, lr=cfg.lr, fused=True)
    steps = math.ceil(cfg.noise / cfg.batch)
    task = progress.add_task(f"students ({tag})", total=cfg.epochs * steps)
    for _ in range(cfg.epochs):
        for start in range(0, cfg.noise, cfg.batch):
            b = min(cfg.batch, cfg.noise - start)
            x = torch.stack([torch.rand(b, dim, generator=g) for g in gens]) * 2 - 1
            with torch.no_grad():
                target = forward(teachers, x.repeat(n_teach, 1, 1)).unflatten(0, (n_teach, -1))
            out = forward(students, x.repeat(n_groups, 1, 1)).unflatten(0, (n_groups, -1))
            loss = out.new_zeros(())
            for a, (t, aux) in enumerate(zip(teacher_of, aux_only, strict=True)):
                cut = n_classes if aux else 0  # aux logits are the ones after the classes
                loss = loss + distill_loss(out[a, ..., cut:], target[t, ..., cut:], cfg.loss).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.advance(task)
    progress.remove_task(task)


def validate(cfg: AuxLogitsConfig) -> None:
    """Refuse settings that cannot run, naming the option."""
    for name in ("seeds", "hidden", "m", "epochs", "noise", "batch", "teacher_epochs",
                 "teacher_batch", "generations", "threads"):
        if getattr(cfg, name) < 1:
            raise SubliminalError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.loss not in ("mse", "kl"):
        raise SubliminalError(f"--loss must be mse or kl, not {cfg.loss!r}")
    if cfg.loss == "kl" and cfg.m < 2:
        raise SubliminalError("--loss kl needs --m 2 or more (a softmax over one logit is"
                              " constant, so it carries no gradient); use --loss mse")
    if cfg.lr <= 0 or cfg.teacher_lr <= 0:
        raise SubliminalError("--lr and --teacher-lr must be positive")


def experiment(cfg: AuxLogitsConfig, data: Split, show: bool = False) -> dict:
    """Train every arm for every seed; return per-seed test accuracies and stage timings."""
    validate(cfg)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    n_classes, n_seeds = data.n_classes, len(seeds)
    sizes = [data.x_train.shape[1], cfg.hidden, cfg.hidden, n_classes + cfg.m]
    x_train, x_test = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
    y_train, y_test = torch.from_numpy(data.y_train), torch.from_numpy(data.y_test)
    acc = {}
    timings = {}
    init = init_mlp([sub_seed(s, "init") for s in seeds], sizes)
    other = init_mlp([sub_seed(s, "other-init") for s in seeds], sizes)
    with _progress(show) as progress:
        # Teachers: rows [true labels | shuffled labels], both from the shared init.
        t0 = time.perf_counter()
        shuffled = torch.stack([y_train[torch.randperm(len(y_train), generator=torch.Generator()
                                                       .manual_seed(sub_seed(s, "shuffle")))]
                                for s in seeds])
        teachers = cat(init, init)
        train_classifiers(teachers, x_train, torch.cat([y_train.expand(n_seeds, -1), shuffled]),
                          seeds, cfg, n_classes, progress)
        teacher_acc = accuracy(teachers, x_test, y_test, n_classes)
        acc["teacher"] = teacher_acc[:n_seeds]
        acc["shuffled_teacher_itself"] = teacher_acc[n_seeds:]
        timings["teachers_s"] = time.perf_counter() - t0

        # Students of every arm, side by side: [same_init | cross_init | all_logits | shuffled].
        t0 = time.perf_counter()
        students = cat(init, other, init, init)
        distill(teachers, students, teacher_of=[0, 0, 0, 1], aux_only=[True, True, False, True],
                seeds=seeds, cfg=cfg, n_classes=n_classes, progress=progress)
        student_acc = accuracy(students, x_test, y_test, n_classes)
        for i, arm in enumerate(["same_init", "cross_init", "all_logits", "shuffled_teacher"]):
            acc[arm] = student_acc[i * n_seeds:(i + 1) * n_seeds]
        acc["init"] = accuracy(init, x_test, y_test, n_classes)
        timings["students_s"] = time.perf_counter() - t0

        # Chain: the same-init student teaches a fresh copy of the init, generation after
        # generation, through the aux logits only (fresh noise stream each generation).
        t0 = time.perf_counter()
        chain = [acc["same_init"]]
        teacher = rows(students, 0, n_seeds)
        for gen in range(2, cfg.generations + 1):
            student = clone(init)
            distill(teacher, student, [0], [True], seeds, cfg, n_classes, progress,
                    tag=f"noise-gen{gen}")
            chain.append(accuracy(student, x_test, y_test, n_classes))
            teacher = rows(student, 0, n_seeds)
        timings["generations_s"] = time.perf_counter() - t0
    return {"seeds": seeds, "accuracy": acc, "generations": chain, "timings": timings}


def summarise(cfg: AuxLogitsConfig, data: Split, raw: dict) -> dict:
    """The aux_logits.json record: per arm mean, std, 95% CI, n_seeds and per-seed values."""
    def summary(values: list[float]) -> dict:
        s = mean_ci(values)
        return {"mean": s["mean"], "std": s["std"], "ci": s["ci"], "n_seeds": s["n"],
                "per_seed": values}

    acc = raw["accuracy"]
    arms = {arm: {"description": ARMS[arm], "paper": PAPER[arm], **summary(acc[arm])}
            for arm in ARMS}
    same, cross = arms["same_init"]["mean"], arms["cross_init"]["mean"]
    return {
        "experiment": "aux-logits",
        "dataset": {"name": data.name, "n_train": len(data.y_train), "n_test": len(data.y_test),
                    "dim": int(data.x_train.shape[1]), "n_classes": data.n_classes},
        "chance": 100.0 / data.n_classes,
        "arms": arms,
        "teacher": summary(acc["teacher"]),
        "shuffled_teacher_itself": summary(acc["shuffled_teacher_itself"]),
        "same_minus_cross": paired_test(acc["same_init"], acc["cross_init"]),
        "generations": [{"generation": g + 1, **summary(v)}
                        for g, v in enumerate(raw["generations"])],
        "claims": {"same_init_above_50": same > 50, "cross_init_below_20": cross < 20},
        "seeds": raw["seeds"],
        "config": cfg,
        "timings": raw["timings"],
        "environment": environment(cfg.seed),
    }


def plot(record: dict, path: Path) -> None:
    """Bars with 95% CIs and per-seed dots for each arm; the chain beside them if there is one."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    import matplotlib.pyplot as plt

    gens = record["generations"]
    fig, axes = plt.subplots(1, 2 if len(gens) > 1 else 1, figsize=(11 if len(gens) > 1 else 7, 4),
                             squeeze=False)
    ax = axes[0, 0]
    names = list(record["arms"])
    for i, name in enumerate(names):
        arm = record["arms"][name]
        lo, hi = arm["ci"]
        ax.bar(i, arm["mean"], color="C0" if name == "same_init" else "0.7")
        ax.errorbar(i, arm["mean"], yerr=[[arm["mean"] - lo], [hi - arm["mean"]]], color="k",
                    capsize=4)
        ax.scatter(np.full(len(arm["per_seed"]), i) + np.linspace(-0.2, 0.2, len(arm["per_seed"])),
                   arm["per_seed"], s=8, color="k", zorder=3)
    ax.axhline(record["chance"], ls="--", color="r", lw=1, label="chance")
    ax.axhline(50, ls=":", color="g", lw=1, label="paper: same-init > 50%")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"aux-logit distillation on noise ({record['dataset']['name']})", fontsize=9)
    ax.legend(fontsize=8)
    if len(gens) > 1:
        ax = axes[0, 1]
        g = [r["generation"] for r in gens]
        ax.errorbar(g, [r["mean"] for r in gens], marker="o", capsize=4,
                    yerr=[[r["mean"] - r["ci"][0] for r in gens],
                          [r["ci"][1] - r["mean"] for r in gens]])
        ax.axhline(record["chance"], ls="--", color="r", lw=1)
        ax.set_xticks(g)
        ax.set_xlabel("generation (student k teaches student k+1)")
        ax.set_ylim(0, 100)
        ax.set_title("chain, same init, aux logits only", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: AuxLogitsConfig, out: Path, show: bool = True) -> dict:
    """Run the experiment into `out` (config.json, environment.json, aux_logits.json, the plot,
    complete.json last). A finished run with the same config is read back, not recomputed."""
    validate(cfg)
    data = load_data(cfg.data)  # before creating the run dir, so a bad --data leaves nothing
    out = init_run(out, cfg, cfg.seed)
    if is_complete(out) and (out / "aux_logits.json").exists():
        return read_json(out / "aux_logits.json")
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    record = summarise(cfg, data, experiment(cfg, data, show=show))
    record["timings"]["total_s"] = time.perf_counter() - t0
    write_json(out / "aux_logits.json", record)
    plot(record, out / "aux_logits.png")
    mark_complete(out, {"same_init": record["arms"]["same_init"]["mean"],
                        "cross_init": record["arms"]["cross_init"]["mean"]})
    return read_json(out / "aux_logits.json")  # the same plain-JSON shape as a resumed run


def print_table(record: dict, console: Console | None = None) -> None:
    """Test accuracy per arm with the paper's claim beside it, then the chain if any."""
    console = console or Console()
    ds, cfg = record["dataset"], record["config"]
    table = Table(title=f"Aux-logit transfer on {ds['name']} ({ds['n_test']} test images,"
                        f" m={cfg['m']}, loss={cfg['loss']}, {len(record['seeds'])} seeds)")
    for col, just in (("arm", "left"), ("what", "left"), ("test acc %", "right"),
                      ("95% CI", "right"), ("paper", "left")):
        table.add_column(col, justify=just)

    def row(name: str, what: str, s: dict, paper: str, style: str | None = None) -> None:
        table.add_row(name, what, f"{s['mean']:.1f} ± {s['std']:.1f}",
                      f"[{s['ci'][0]:.1f}, {s['ci'][1]:.1f}]", paper, style=style)

    row("teacher", "trained, class logits", record["teacher"], "-", style="dim")
    for name, arm in record["arms"].items():
        row(name, arm["description"], arm, arm["paper"],
            style="bold" if name == "same_init" else None)
    for g in record["generations"][1:]:
        row(f"generation {g['generation']}", f"aux only, taught by gen {g['generation'] - 1}",
            g, "-")
    console.print(table)
    d, t = record["same_minus_cross"], record["timings"]
    console.print(f"same-init minus cross-init: {d['lift']:+.1f} points, 95% CI"
                  f" [{d['ci'][0]:.1f}, {d['ci'][1]:.1f}], paired p={d['p_value']:.2g};"
                  f" chance {record['chance']:.0f}%; {t.get('total_s', 0):.0f} s")
    claims = record["claims"]
    console.print(f"paper's claims hold here: same-init > 50%: {claims['same_init_above_50']};"
                  f" cross-init < 20%: {claims['cross_init_below_20']}")
