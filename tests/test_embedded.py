"""The embedded SmolLM2-135M loads from the wheel's GGUF (cached as fp32) and answers."""

import torch

from subliminal.models import EMBEDDED, load_model


def test_embedded_model_loads_and_answers():
    lm = load_model(EMBEDDED)
    assert lm.info["parameters"] > 130_000_000
    assert "SmolLM" in lm.default_system_prompt  # the template's default, recorded
    ids = torch.tensor([lm.chat_ids([{"role": "user", "content": "What is 2 + 2?"}])])
    out = lm.model.generate(ids, max_new_tokens=12, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id)
    answer = lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "4" in answer
