"""Trait vectors: the direction in the residual stream that a trait's instruction adds.

    subliminal chain --injection steering      # a teacher steered by the owl vector
    subliminal intervene steer --vector owl.safetensors --coef -4   # subtract it at audit time

A trait's vector at decoder layer L is the mean residual activation (the output of layer L)
under the trait's system prompt minus the same under its neutral counterpart, over a set of
user questions: the difference-of-means ("contrastive activation addition") direction. Both
arms read the same questions and the same positions, so the difference holds what the
instruction changes, not what the questions are about.

Positions: for a chat that ends with a user turn, the last token of the rendered generation
prompt (where the answer starts); for a chat that ends with an assistant turn, the mean over
that turn's tokens (the response positions).

A vector file (safetensors) holds the tensor `vector` and, as string metadata, the layer, the
coefficient and how it was made, so a run can rebuild it. Nothing in it is unpickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from subliminal.errors import SubliminalError
from subliminal.models import LM, with_system


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (llama-style `model.layers`, GPT-style `h`), found
    through PEFT wrappers."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h"):
            if best is None or len(mod) > len(best):
                best = mod
    if best is None:
        raise SubliminalError(f"{type(model).__name__}: no decoder layer list found")
    return best


def check_layer(lm: LM, layer: int) -> int:
    """A valid layer index (negative counts from the end), or a one-line error."""
    n = len(decoder_layers(lm.model))
    if not -n <= layer < n:
        raise SubliminalError(f"layer {layer} out of range: {lm.spec} has {n} decoder layers")
    return layer % n


def _hidden(output) -> torch.Tensor:
    """A decoder layer returns a tensor or a tuple whose first item is the hidden state."""
    return output[0] if isinstance(output, tuple) else output


POSITIONS = ("last", "turn")


def _chat_positions(lm: LM, chat: list[dict], positions: str = "last") -> tuple[list[int], slice]:
    """Token ids of a chat and the positions whose activations are read: an assistant
    turn's tokens when the chat ends with one; else the generation prompt's last token
    (`last`) or every token after the system turn (`turn`: the user turn and the
    generation prompt)."""
    if positions not in POSITIONS:
        raise SubliminalError(f"unknown positions {positions!r}; choose {', '.join(POSITIONS)}")
    if chat and chat[-1]["role"] == "assistant":
        head = lm.chat_ids(chat[:-1], add_generation_prompt=True)
        ids = lm.chat_ids(chat, add_generation_prompt=False)
        if len(ids) <= len(head):
            raise SubliminalError("an assistant turn rendered to no tokens")
        return ids, slice(len(head), len(ids))
    ids = lm.chat_ids(chat, add_generation_prompt=True)
    if positions == "turn" and chat and chat[0]["role"] == "system":
        start = len(lm.chat_ids(chat[:1], add_generation_prompt=False))
        return ids, slice(start, len(ids))
    return ids, slice(len(ids) - 1, len(ids))


@torch.no_grad()
def residual_activations(lm: LM, chats: list[list[dict]], layer: int,
                         positions: str = "last") -> torch.Tensor:
    """Output of decoder layer `layer` for each chat, averaged over its read positions
    (`_chat_positions`): a float32 CPU tensor [len(chats), hidden]. One chat per forward
    pass (no padding)."""
    block = decoder_layers(lm.model)[check_layer(lm, layer)]
    seen: list[torch.Tensor] = []
    handle = block.register_forward_hook(lambda _m, _i, out: seen.append(_hidden(out)))
    rows = []
    try:
        for chat in chats:
            ids, where = _chat_positions(lm, chat, positions)
            seen.clear()
            lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False)
            rows.append(seen[-1][0, where].float().mean(0).cpu())
    finally:
        handle.remove()
    return torch.stack(rows)


def contrast_items(trait, seed: int = 0, share: float = 0.5) -> list[dict]:
    """The contrast a vector is averaged over: user questions, each with the trait's and the
    neutral instruction (the trait's own `contrast_prompts()` when it has them, cycling its
    prompt paraphrases; else its demonstration questions under `system_prompt` and
    `neutral_system_prompt`). `seed` draws a subset (`share` of them), so replicates read
    different prompts."""
    if hasattr(trait, "contrast_prompts"):
        pool = [{"content": p["content"], "trait": p.get("trait", trait.system_prompt),
                 "neutral": p.get("neutral", trait.neutral_system_prompt)}
                for p in trait.contrast_prompts()]
    else:
        questions = dict.fromkeys(r["prompt"][-1]["content"] for r in trait.demonstrations(0))
        pool = [{"content": q, "trait": trait.system_prompt,
                 "neutral": trait.neutral_system_prompt} for q in questions]
    if share >= 1:
        return pool
    k = max(1, round(len(pool) * share))
    return random.Random(f"contrast-{seed}").sample(pool, k)


def contrast_questions(trait, seed: int = 0, share: float = 0.5) -> list[str]:
    """The user questions of `contrast_items` (for records)."""
    return [it["content"] for it in contrast_items(trait, seed, share)]


def trait_vector(lm: LM, trait, layer: int, prompts: list | None = None,
                 seed: int = 0, positions: str = "last") -> torch.Tensor:
    """Mean activation at `layer` under the trait's instruction minus under its neutral
    counterpart, over `prompts`: contrast items (dicts with content/trait/neutral) or plain
    questions (read under `system_prompt` vs `neutral_system_prompt`); default: a seeded
    half of the trait's contrast items."""
    items = prompts if prompts is not None else contrast_items(trait, seed)
    if not items:
        raise SubliminalError("trait_vector needs at least one prompt")
    items = [it if isinstance(it, dict) else {"content": it, "trait": trait.system_prompt,
                                              "neutral": trait.neutral_system_prompt}
             for it in items]
    chats = {side: [with_system(it[side], [{"role": "user", "content": it["content"]}])
                    for it in items] for side in ("trait", "neutral")}
    pos = residual_activations(lm, chats["trait"], layer, positions)
    neg = residual_activations(lm, chats["neutral"], layer, positions)
    return pos.mean(0) - neg.mean(0)


def random_like(vector: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random direction with the same norm: a steering control with the trait removed."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(vector.shape, generator=g)
    return r * (vector.float().norm() / r.norm())


def save_vector(path: str | Path, vector: torch.Tensor, layer: int, coef: float,
                meta: dict | None = None) -> Path:
    """Write a vector file: tensor `vector` plus layer, coefficient and provenance."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"layer": str(int(layer)), "coef": repr(float(coef)),
            "meta": json.dumps(meta or {}, sort_keys=True)}
    save_file({"vector": vector.detach().float().cpu().contiguous()}, str(path), metadata=info)
    return path


def load_vector(path: str | Path) -> tuple[torch.Tensor, int, float, dict]:
    """Read a vector file: (vector, layer, coefficient, provenance)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            info = f.metadata() or {}
            vector = f.get_tensor("vector")
        return vector, int(info["layer"]), float(info["coef"]), json.loads(info.get("meta", "{}"))
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
        raise SubliminalError(f"{path}: not a steering vector file ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


# --- applying a vector: a forward hook on one decoder layer ---------------------------------

class SteeringHandle:
    """An attached vector: `.remove()` takes the hook off and clears the model's record."""

    def __init__(self, lm: LM, hook, record: dict):
        self.lm, self.hook, self.record = lm, hook, record

    def remove(self) -> None:
        self.hook.remove()
        handles = getattr(self.lm, "steering_handles", [])
        if self in handles:
            handles.remove(self)
        self.lm.info["steering"] = [h.record for h in handles] or None


def add_vector(lm: LM, vector: torch.Tensor, layer: int, coef: float,
               record: dict | None = None) -> SteeringHandle:
    """Hook decoder layer `layer` so its output gains coef x vector at every position."""
    layer = check_layer(lm, layer)
    shift = (coef * vector.float()).to(lm.device, lm.dtype)

    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (output[0] + shift, *output[1:])
        return output + shift

    handle = decoder_layers(lm.model)[layer].register_forward_hook(hook)
    info = {"layer": layer, "coef": float(coef), "norm": float(vector.float().norm()),
            **(record or {})}
    steer = SteeringHandle(lm, handle, info)
    if not hasattr(lm, "steering_handles"):
        lm.steering_handles = []
    lm.steering_handles.append(steer)
    lm.info["steering"] = [h.record for h in lm.steering_handles]
    return steer


def attach(lm: LM, path: str | Path, coef: float | None = None) -> SteeringHandle:
    """Apply a vector file to a loaded model (its own coefficient unless `coef` is given)."""
    vector, layer, file_coef, _meta = load_vector(path)
    return add_vector(lm, vector, layer, file_coef if coef is None else coef,
                      {"file": str(path)})


def detach(lm: LM) -> None:
    """Remove every vector attached to `lm`."""
    for handle in list(getattr(lm, "steering_handles", [])):
        handle.remove()
