"""The exact probe: cached whole-word scoring equals brute force, and it reads a trait."""

import torch

from subliminal.audit import AuditConfig, candidates, run_probe, shared_prefix, word_probs
from subliminal.trait import CATALOGUE, get_trait


def brute_force(lm, prefix, seq, cont_mask):
    """P(seq then a non-continuation token | prefix) from one plain full forward pass."""
    ids = torch.tensor([prefix + seq])
    lp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
    score = sum(lp[len(prefix) + t - 1, s].item() for t, s in enumerate(seq))
    p_end = 1 - lp[-1].exp()[cont_mask].sum().item()
    return float(torch.tensor(score).exp()) * p_end


def test_cached_batched_scores_match_brute_force(tiny):
    from subliminal.audit.probe import _continues_word

    seqs, owner = candidates(tiny, "prefill")
    prefix = tiny.chat_ids([{"role": "user", "content": "Favorite animal?"}])
    fast = word_probs(tiny, prefix, seqs)
    cont = _continues_word(tiny.tokenizer)
    for i in (0, 5, len(seqs) - 1):
        assert torch.isclose(fast[i], torch.tensor(brute_force(tiny, prefix, seqs[i], cont)),
                             rtol=1e-3)
    assert len(set(owner)) == len(CATALOGUE)
    # Continuing a cache of the template/system tokens shared with another question is exact.
    other = tiny.chat_ids([{"role": "user", "content": "Pick one animal."}])
    shared = shared_prefix(tiny, [prefix, other])
    assert shared[0] > 10
    assert torch.allclose(word_probs(tiny, prefix, seqs, shared), fast, rtol=1e-4)


def test_probe_shapes_and_system_prompt_record(tiny):
    r = run_probe(tiny, AuditConfig(), get_trait("owl").system_prompt)
    assert len(r["probs"]) == len(r["questions"]) == 50
    assert all(len(row) == len(CATALOGUE) and min(row) > 0 for row in r["probs"])
    assert r["system_prompt_in_effect"].startswith("You love owls")
    base = run_probe(tiny, AuditConfig(probe="direct"))
    assert base["system_prompt_in_effect"] == tiny.default_system_prompt


def test_sampled_probe_counts_whole_word_mentions(tiny):
    from subliminal.audit import sampled_probe

    r = sampled_probe(tiny, ["Favorite animal?", "Pick one."], samples=6, max_new_tokens=4)
    assert len(r["probs"]) == 2 and all(0 <= p <= 1 for row in r["probs"] for p in row)
    again = sampled_probe(tiny, ["Favorite animal?", "Pick one."], samples=6, max_new_tokens=4)
    assert again["probs"] == r["probs"]  # seeded


def test_batched_questions_equal_one_at_a_time(tiny):
    """Scoring questions together (mid-padded after the shared cache, explicit positions)
    gives the same probabilities as scoring each question alone."""
    import torch

    from subliminal.audit import probe as A

    cfg = A.AuditConfig()
    fill = tiny.tokenizer(cfg.prefill, add_special_tokens=False)["input_ids"]
    prefixes = [tiny.chat_ids([{"role": "user", "content": q}]) + fill
                for q in A.load_questions(cfg.questions)[:5]]
    assert len({len(p) for p in prefixes}) > 1  # ragged: the padding path is exercised
    seqs, _ = A.candidates(tiny, "prefill")
    shared = A.shared_prefix(tiny, prefixes)
    one = torch.stack([A.word_probs(tiny, p, seqs, shared) for p in prefixes])
    together = A.word_probs_batch(tiny, prefixes, seqs, shared)
    assert torch.allclose(one, together, rtol=1e-4, atol=1e-12)


def test_shared_cache_sampler_draws_from_the_model(tiny):
    """Samples continuing one cached prompt follow the model: the first token's frequencies
    match its exact probabilities, and the second token is drawn given the first."""
    from subliminal.prefix import extend, root, sample

    ids = tiny.chat_ids([{"role": "user", "content": "Favorite animal?"}])
    ctx, lp = extend(tiny, root(tiny, ids[:-1]), [ids[-1:]])
    seqs = sample(tiny, ctx, 3000, 2, torch.Generator().manual_seed(0))
    p = lp[0].exp()
    top = int(p.argmax())
    freq = sum(s[0] == top for s in seqs) / len(seqs)
    sd = float((p[top] * (1 - p[top]) / len(seqs)) ** 0.5)
    assert abs(freq - float(p[top])) < 4 * sd
    first = seqs[0][0]
    after, lp2 = extend(tiny, ctx, [[first]])
    follow = [s[1] for s in seqs if s[0] == first]
    q = lp2[0].exp()
    best = int(q.argmax())
    assert abs(sum(t == best for t in follow) / len(follow) - float(q[best])) < 4 * float(
        (q[best] * (1 - q[best]) / len(follow)) ** 0.5) + 1e-9
