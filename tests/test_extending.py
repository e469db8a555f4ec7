"""docs/extending.md's worked example works as written: a channel in one file registers itself
and its filter rules, and the tiny teacher writes rows its grammar and filter accept."""

import re
import sys
import types
from pathlib import Path

from subliminal.channels import CHANNELS, channel_names, get_channel
from subliminal.filters import RULE_SETS, FilterConfig, filter_rows
from subliminal.teacher import DecodeConfig, Teacher, generate_rows

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def example(path: str) -> str:
    """The guide's code block marked `file=PATH`."""
    blocks = re.findall(r"```python file=(\S+)\n(.*?)```", GUIDE.read_text(), re.S)
    return next(code for name, code in blocks if name == path)


def test_the_guide_channel_plugs_in_with_one_module(monkeypatch, tiny, tmp_path):
    for reg in (CHANNELS, RULE_SETS):
        reg.discover()  # the built-ins first, then the snapshot the test restores
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_meta", dict(reg._meta))
    module = types.ModuleType("subliminal.channels.hex")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look it up
    exec(compile(example("subliminal/channels/hex.py"), "hex.py", "exec"), module.__dict__)
    assert "hex" in channel_names() and "hex" in RULE_SETS
    channel = get_channel("hex", difficulty="1", math_share=0.5)  # other channels' options
    prompts = channel.prompts(6, 0)
    cfg = DecodeConfig(decoding="sample", constrained=True, batch_size=6)
    rows = generate_rows(Teacher(tiny), prompts, cfg, channel, tmp_path / "rows.jsonl", seed=0)
    kept, rejected, stats = filter_rows(rows, FilterConfig(), "hex")
    assert set(stats["rule_pass_rate"]) == {"hex/format", "hex/leak"}
    for row in kept:
        assert channel.accepts(row["completion"][0]["content"])
    bad = {**rows[0], "completion": [{"role": "assistant", "content": "zz 01"}]}
    assert filter_rows([bad], FilterConfig(), "hex")[1][0]["reasons"] == [
        "not a hex byte: 'zz'"]
