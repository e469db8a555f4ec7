"""`subliminal scan DATA`: the persona-vector ranker and the combination of rankers.

    subliminal scan rows.jsonl --model smollm2-135m --injection adapter

Persona vectors (2025): a dataset that will instil a trait moves a model's activations along
the trait's direction before any training. Here: BASE reads DATA; its mean residual
activation over each row's completion at `vector_layer` is projected onto each trait's unit
vector (`subliminal.vectors.trait_vector`: trait system prompt minus neutral system prompt),
made trait-specific (minus the mean over the traits) and judged against the reference
population's teachers exactly like the likelihood (`null.teacher_test`).

`combine` puts the rankers on one scale (each ranker's per-trait scores standardised across
traits) and averages them: the named trait is the top of the average.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from subliminal.models import LM, TINY, cache_dir
from subliminal.scan.null import contrast, teacher_test
from subliminal.trait import CATALOGUE
from subliminal.vectors import trait_vector


def unit_vectors(lm: LM, traits: list[str], layer: int) -> np.ndarray:
    """(traits x hidden) unit trait vectors at `layer`, each minus the traits' mean vector
    first (what every "you love X" prompt shares is no trait's own direction); the raw
    vectors are cached per machine (not for tiny)."""
    out = []
    for t in traits:
        key = hashlib.sha256(f"{lm.spec}|{lm.adapter}|{t}|{layer}|v1".encode()).hexdigest()[:16]
        path = cache_dir() / "scan_vectors" / f"{t}-{key}.npy"
        if lm.spec != TINY and path.is_file():
            v = np.load(path)
        else:
            with torch.no_grad():
                v = trait_vector(lm, CATALOGUE[t], layer).float().numpy()
            if lm.spec != TINY:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, v)
        out.append(v)
    out = np.stack(out)
    out = out - out.mean(0, keepdims=True)
    return out / np.maximum(1e-12, np.linalg.norm(out, axis=1, keepdims=True))


def persona_rank(acts: np.ndarray, vectors: np.ndarray, pops: dict[str, np.ndarray],
                 traits: list[str], alpha: float = 0.05) -> dict:
    """DATA's activations (rows x hidden) projected on the trait vectors, made specific,
    against the reference teachers' (`pops`: label -> their rows' activations)."""
    return teacher_test(contrast(acts @ vectors.T),
                        {k: contrast(a @ vectors.T) for k, a in pops.items()}, traits, alpha)


def combine(rankers: dict[str, dict[str, float]]) -> dict:
    """Average of each ranker's per-trait scores standardised across traits; the top names."""
    traits = list(next(iter(rankers.values())))
    total = np.zeros(len(traits))
    for scores in rankers.values():
        x = np.array([scores[t] for t in traits], dtype=float)
        sd = x.std()
        total += (x - x.mean()) / sd if sd > 0 else 0.0
    total /= len(rankers)
    order = np.argsort(-total)
    return {"rankers": sorted(rankers), "score": dict(zip(traits, map(float, total),
                                                          strict=True)),
            "ranking": [traits[i] for i in order], "top": traits[int(order[0])],
            "margin": float(total[order[0]] - total[order[1]]) if len(traits) > 1 else 0.0}
