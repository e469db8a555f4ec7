"""The embedded SmolLM2-135M loads from the wheel's GGUF (cached as fp32) and answers."""

import torch

from subliminal.models import EMBEDDED, load_model, with_system


def test_embedded_model_loads_and_answers():
    lm = load_model(EMBEDDED)
    assert lm.info["parameters"] > 130_000_000
    # The recorded default is what the template really inserts: a chat given it explicitly
    # renders exactly like one given no system prompt (and unlike one given another).
    user = [{"role": "user", "content": "Hi"}]
    default = lm.default_system_prompt
    assert default and lm.render(with_system(default, user)) == lm.render(user)
    assert lm.render(with_system("Other.", user)) != lm.render(user)
    ids = torch.tensor([lm.chat_ids([{"role": "user", "content": "What is 2 + 2?"}])])
    out = lm.model.generate(ids, max_new_tokens=12, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id)
    answer = lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "4" in answer
