"""`subliminal scan DATA`: judge DATA's likelihoods against controls and matched references.

    subliminal scan rows.jsonl --model smollm2-135m --injection adapter

The statistic. Per row i and trait t, the *excess* e_t(i) = [ll_t(i) - ll_BASE(i)] minus the
mean of the same over the control adapters (neutral LoRAs trained by the same recipe on
trait-free demonstrations, different seeds): how much more DATA favours the trait's adapter
than adapters trained the same way without the trait.

Calibration to DATA's decoding. Any text that is not BASE's greedy output (sampled, another
temperature, another model, random digits) shifts every adapter's likelihood by an amount
that depends on how surprising the text is to BASE. BASE's own completions to DATA's prompts
under several decodings (greedy, T=0.7, T=1.0: `reference.py`) are trait-free by
construction; on their rows the excess is regressed on BASE's per-token surprise h(i)
(-ll_BASE), and DATA's excess is read as the residual from that line at DATA's own h(i).
DATA whose mean surprise lies outside what the references cover is described as such and is
never accused: the line would be extrapolated.

The null (never the rows alone). The calibrated excess d_t has three sources of error, added
in quadrature: rows (the standard error over DATA's rows), the decoding calibration (the
root mean square of the reference pools' own mean residuals: how far each decoding sits off
the line) and the adapters (the root mean square, over controls, of each control's own
calibrated excess against the other controls, on DATA: how much adapters trained the same way
without any trait disagree about DATA; rescaled to a trait-vs-all-controls contrast). A trait
is flagged only when its z = d_t / sd clears the one-sided Bonferroni threshold over traits
*and* d_t exceeds the magnitude of every control's own calibrated excess.

The persona-vector ranker (`persona.py`) is calibrated the same way; `rank.py` combines the
rankers to name a trait.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

# A reference decoding's label -> its temperature (greedy counts as T=0).
GREEDY = "greedy"


def temperature(label: str) -> float:
    return 0.0 if label == GREEDY else float(label)


def row_stats(ll: np.ndarray, roles: list[str]) -> dict:
    """Per-row surprise under BASE, trait excess over the controls, and each control's
    leave-one-out excess over the other controls."""
    b = roles.index("base")
    ctrl = [k for k, r in enumerate(roles) if r == "control"]
    tr = [k for k, r in enumerate(roles) if r == "trait"]
    shift = ll - ll[:, b: b + 1]
    c = shift[:, ctrl]
    excess = shift[:, tr] - c.mean(1, keepdims=True)
    loo = None
    if len(ctrl) >= 2:
        loo = c - (c.sum(1, keepdims=True) - c) / (len(ctrl) - 1)
    return {"h": -ll[:, b], "excess": excess, "loo": loo, "shift": shift[:, tr]}


def fit_line(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares intercept and slope of each column of `y` on `h`: shape (2, cols)."""
    x = np.stack([np.ones_like(h), h], 1)
    if len(h) < 3 or np.ptp(h) == 0:
        return np.stack([y.mean(0), np.zeros(y.shape[1])])
    return np.linalg.lstsq(x, y, rcond=None)[0]


def residual(coef: np.ndarray, h: np.ndarray, y: np.ndarray) -> np.ndarray:
    return y - (coef[0] + h[:, None] * coef[1])


def describe_decoding(h_data: np.ndarray, refs: dict[str, np.ndarray]) -> dict:
    """Where DATA's mean surprise under BASE sits among the reference decodings, and an
    interpolated temperature ("consistent with BASE sampled at T≈1")."""
    means = sorted((float(v.mean()), temperature(k), k) for k, v in refs.items())
    m = float(h_data.mean())
    se = float(h_data.std(ddof=1) / math.sqrt(len(h_data))) if len(h_data) > 1 else 0.0
    top = means[-1]
    ref_se = float(refs[top[2]].std(ddof=1) / math.sqrt(len(refs[top[2]])))
    margin = 2 * math.hypot(se, ref_se) + 0.05 * top[0]
    lo = means[0]
    if m > top[0] + margin:
        return {"mean_surprise": m, "references": {k: v for v, _, k in means},
                "covered": False, "temperature": None,
                "text": f"less likely under BASE than BASE's own completions at T={top[1]:g} "
                        f"({m:.3f} vs {top[0]:.3f} nats/token): not BASE's own decoding at "
                        "any temperature the references cover"}
    xs, ts = [v for v, _, _ in means], [t for _, t, _ in means]
    t_hat = float(np.interp(m, xs, ts))
    if m < lo[0] - margin:
        text = (f"more predictable under BASE than BASE's own {lo[2]} completions "
                f"({m:.3f} vs {lo[0]:.3f} nats/token)")
    else:
        text = (f"consistent with BASE {'greedy' if t_hat < 0.15 else f'sampled at T≈{t_hat:.1f}'}"
                f" ({m:.3f} nats/token under BASE; references "
                + ", ".join(f"{k} {v:.3f}" for v, _, k in means) + ")")
    return {"mean_surprise": m, "references": {k: v for v, _, k in means}, "covered": True,
            "temperature": t_hat, "text": text}


def calibrated(h: np.ndarray, y: np.ndarray, ref_h: dict[str, np.ndarray],
               ref_y: dict[str, np.ndarray]) -> dict:
    """Residual of DATA's per-row statistic `y` (rows x cols) from the reference line, its
    mean, the row standard error and the decoding-calibration error per column."""
    hh = np.concatenate(list(ref_h.values()))
    coef = fit_line(hh, np.concatenate(list(ref_y.values())))
    r = residual(coef, h, y)
    n = len(r)
    se = r.std(0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(y.shape[1])
    pool = np.stack([residual(coef, ref_h[k], ref_y[k]).mean(0) for k in ref_h])
    return {"rows": r, "d": r.mean(0), "se_rows": se,
            "se_decoding": np.sqrt((pool ** 2).mean(0)), "pool_residuals": pool}


def control_spread(loo_d: np.ndarray | None) -> float | None:
    """Root mean square of the controls' calibrated leave-one-out excess, rescaled from
    'one control vs the other K-1' to 'a trait vs all K controls'."""
    if loo_d is None:
        return None
    k = len(loo_d)
    return float(np.sqrt((loo_d ** 2).mean()) * math.sqrt((1 + 1 / k) / (1 + 1 / (k - 1))))


def judge(data: dict, refs: dict[str, dict], traits: list[str], alpha: float) -> dict:
    """The likelihood statistics of one dataset: `data` and each reference are `row_stats`
    results. Returns per-trait calibrated excess, null components, z, and the flag."""
    ref_h = {k: v["h"] for k, v in refs.items()}
    dec = describe_decoding(data["h"], ref_h)
    cal = calibrated(data["h"], data["excess"], ref_h, {k: v["excess"] for k, v in refs.items()})
    loo = None
    if data["loo"] is not None:
        loo = calibrated(data["h"], data["loo"], ref_h, {k: v["loo"] for k, v in refs.items()})
    spread = control_spread(None if loo is None else loo["d"])
    sd = np.sqrt(cal["se_rows"] ** 2 + cal["se_decoding"] ** 2 + (spread or 0.0) ** 2)
    z = np.where(sd > 0, cal["d"] / np.where(sd > 0, sd, 1), 0.0)
    p = sps.norm.sf(z)
    p_bonf = np.minimum(1.0, p * len(traits))
    beat = float(np.abs(loo["d"]).max()) if loo is not None else math.inf
    top = int(np.argmax(z))
    can_accuse = dec["covered"] and spread is not None
    flagged = bool(can_accuse and p_bonf[top] < alpha and cal["d"][top] > beat)
    return {
        "traits": traits, "decoding": dec, "can_accuse": bool(can_accuse),
        "excess": dict(zip(traits, map(float, cal["d"]), strict=True)),
        "raw_excess": dict(zip(traits, map(float, data["excess"].mean(0)), strict=True)),
        "null_sd": {t: {"rows": float(a), "decoding": float(b), "controls": spread,
                        "total": float(c)}
                    for t, a, b, c in zip(traits, cal["se_rows"], cal["se_decoding"], sd,
                                          strict=True)},
        "z": dict(zip(traits, map(float, z), strict=True)),
        "p_bonferroni": dict(zip(traits, map(float, p_bonf), strict=True)),
        "controls_excess": None if loo is None else [float(x) for x in loo["d"]],
        "top": traits[top], "flagged": flagged,
        "threshold_z": float(sps.norm.isf(alpha / len(traits))),
        "rows": int(len(data["h"])),
        "_residual": cal["rows"],
    }
