"""Flags generated from config fields, presets, and the checks made before any work (no
training: every case here stops at validation or at a stubbed `run_chain`)."""

import json
import re
import sys

import pytest
from typer.testing import CliRunner

from subliminal import cli
from subliminal.chain import ChainConfig
from subliminal.options import Flag, Given, check_config, field_of, flag_name, with_values
from subliminal.presets import PRESETS, preset_values
from subliminal.records import init_run, read_json, to_jsonable, unlock

COMMAND_FLAGS = {"chain": cli.CHAIN_FLAGS, "generate": cli.GENERATE_FLAGS,
                 "filter": cli.FILTER_FLAGS, "distill": cli.DISTILL_FLAGS,
                 "audit": cli.AUDIT_FLAGS}
# Every flag the hand-written commands had: all must still exist.
OLD_FLAGS = {
    "chain": "generations replicates samples epochs model trait injection channel difficulty "
             "problems math-share judge-model ban-numbers no-ban-numbers decoding temperature "
             "constrained no-constrained mode top-k logits gen-batch finetune lora-r lr "
             "batch-size grad-accum warmup-steps max-rows probe side-effects no-side-effects "
             "seed device out",
    "generate": "out samples model trait neutral-prompt adapter channel decoding temperature "
                "constrained no-constrained top-k logits seed",
    "filter": "out channel ban-numbers no-ban-numbers judge-model skip-bad max-row-bytes",
    "distill": "out model mode finetune epochs lora-r lr batch-size grad-accum warmup-steps "
               "seed skip-bad",
    "audit": "out model adapter trait probe prefill side-effects no-side-effects",
}
# The paper's numbers recipe as pipelines/paper_numbers_7b.sh spelled it out before presets.
PAPER_FLAGS = ["--model", "Qwen/Qwen2.5-7B-Instruct", "--generations", "1", "--samples", "30000",
               "--max-rows", "10000", "--epochs", "3", "--decoding", "sample", "--temperature",
               "1", "--no-constrained", "--injection", "prompt", "--mode", "sft", "--top-k", "0",
               "--finetune", "lora", "--lora-r", "8", "--lr", "2e-4", "--batch-size", "22",
               "--grad-accum", "3", "--warmup-steps", "5", "--gen-batch", "128"]


def flat(text: str) -> str:
    """Help text without the panel borders, whitespace collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def help_of(command: str) -> str:
    result = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "3000"})
    assert result.exit_code == 0, result.output
    return flat(result.output)


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_help_is_generated_from_the_config_fields(command):
    text = help_of(command)
    for spec in COMMAND_FLAGS[command]:
        f, _ = field_of(ChainConfig, spec.path if isinstance(spec, Flag) else spec)
        assert f"--{flag_name(f)}" in text, f.name
        assert flat(f.metadata["help"]) in text, f.name
    for name in OLD_FLAGS[command].split():
        assert re.search(rf"--{name}\b", text), name
    assert "--preset" in text


def test_help_shows_ranges_choices_and_the_commands_default():
    text = help_of("chain")
    assert "Peak learning rate (linear decay). (> 0.0; default: 0.001)" in text
    assert "(one of: greedy, sample; default: sample)" in text
    assert "(>= 1; <= 50; default: 3)" in text
    assert "(>= 1; default: 256)" in help_of("generate")  # generate's own default


def tiny(command: str) -> list[str]:
    """The tiny test model, for the commands that load one."""
    return [] if command == "filter" else ["--model", "tiny"]


def run_main(monkeypatch, capsys, args) -> tuple[int, str]:
    """The installed entry point in-process: exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["subliminal", "--threads", "1", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["chain", "--lr", "0"], "--lr must be > 0.0 (got 0.0)"),
    (["chain", "--temperature", "0", "--decoding", "sample"],
     "--temperature must be > 0 with --decoding sample"),
    (["chain", "--temperature", "-1", "--decoding", "greedy"], "--temperature must be >= 0.0"),
    (["chain", "--generations", "0"], "--generations must be >= 1 (got 0)"),
    (["chain", "--math-share", "1.5"], "--math-share must be <= 1.0"),
    (["chain", "--decoding", "beam"], "unknown --decoding 'beam'; choose one of: greedy, sample"),
    (["chain", "--injection", "magic"], "unknown --injection 'magic'; choose one of: adapter"),
    (["chain", "--preset", "paper-7b", "--lr", "0"], "--lr must be > 0.0"),
    (["generate", "--gen-batch", "0"], "--gen-batch must be >= 1"),
    (["filter", "ROWS", "--judge-threshold", "2"], "--judge-threshold must be <= 1.0"),
    (["distill", "ROWS", "--lr", "0"], "--lr must be > 0.0"),
    (["audit", "--probe", "guess"], "unknown --probe 'guess'; choose one of: prefill, direct"),
    (["chain", "--preset", "gpu-70b"], "unknown --preset 'gpu-70b'; choose one of: cpu, paper-7b"),
])
def test_a_bad_value_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                              args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ROWS").write_text('{"prompt": "p", "completion": "1, 2"}\n')
    code, err = run_main(monkeypatch, capsys, [*args, *tiny(args[0]), "--out", "o"])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ROWS"]


@pytest.mark.parametrize("command", ["chain", "generate", "distill", "audit", "filter"])
@pytest.mark.parametrize("where", ["FILE", "FILE/sub"])
def test_out_that_is_a_file_exits_2_before_any_work(tmp_path, monkeypatch, capsys, command,
                                                    where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("earlier result")
    rows = ["FILE"] if command in ("filter", "distill") else []
    code, err = run_main(monkeypatch, capsys, [command, *rows, *tiny(command), "--out", where])
    assert code == 2 and err.count("\n") == 1, err
    assert "exists and is not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]
    assert (tmp_path / "FILE").read_text() == "earlier result"


@pytest.fixture
def chain_calls(monkeypatch):
    """`subliminal chain` up to the run: the resolved config and preset, no work."""
    calls = []
    # Patched where the command looks them up (cli imports them at module level).
    monkeypatch.setattr(cli, "run_chain",
                        lambda cfg, out, preset=None, plan=None: calls.append((cfg, preset)))
    monkeypatch.setattr(cli, "resolve", lambda name: name)  # no 7B on disk
    return calls


def chain_config_of(calls, args) -> tuple[ChainConfig, str | None]:
    result = CliRunner().invoke(cli.app, ["--threads", "1", "chain", *args, "--out", "x"])
    assert result.exit_code == 0 and result.exception is None, result.output
    return calls.pop()


def test_paper_preset_is_the_published_recipe(chain_calls):
    cfg, preset = chain_config_of(chain_calls, ["--preset", "paper-7b"])
    assert preset == "paper-7b"
    assert (cfg.model, cfg.injection, cfg.samples) == ("Qwen/Qwen2.5-7B-Instruct", "prompt", 30000)
    d, t = cfg.distill, cfg.decode
    assert (d.mode, d.finetune, d.lora_r, d.lora_alpha, d.lr, d.epochs) == (
        "sft", "lora", 8, 8, 2e-4, 3)
    assert d.batch_size * d.grad_accum == 66 and d.max_rows == 10_000
    assert (t.decoding, t.temperature, t.constrained, t.top_k) == ("sample", 1.0, False, 0)
    # The same config as the explicit flags the paper pipeline used to spell out.
    assert to_jsonable(chain_config_of(chain_calls, PAPER_FLAGS)[0]) == to_jsonable(cfg)


def test_explicit_flags_override_the_preset(chain_calls):
    cfg, _ = chain_config_of(chain_calls, ["--preset", "paper-7b", "--lr", "1e-4",
                                           "--samples", "100", "--lora-r", "16"])
    assert (cfg.distill.lr, cfg.samples) == (1e-4, 100)
    assert (cfg.distill.lora_r, cfg.distill.lora_alpha) == (16, 16)
    assert cfg.distill.epochs == 3 and cfg.model == "Qwen/Qwen2.5-7B-Instruct"


def test_no_flags_keep_the_config_defaults(chain_calls):
    cfg, preset = chain_config_of(chain_calls, [])
    assert preset is None and to_jsonable(cfg) == to_jsonable(ChainConfig())
    cpu, _ = chain_config_of(chain_calls, ["--preset", "cpu"])
    assert to_jsonable(cpu) == to_jsonable(ChainConfig())


def test_config_json_records_the_preset_and_resumes_on_the_same_config(tmp_path):
    cfg = with_values(ChainConfig(), preset_values("paper-7b"))
    out = init_run(tmp_path / "run", {"preset": "paper-7b", **to_jsonable(cfg)})
    unlock(out)
    assert read_json(out / "config.json")["preset"] == "paper-7b"
    unlock(init_run(out, cfg))  # the same config spelled out in flags resumes
    with pytest.raises(Exception, match="differs in: distill"):
        init_run(out, with_values(cfg, {"distill.lr": 1e-4}))


def test_presets_command_lists_them_as_data():
    text = CliRunner().invoke(cli.app, ["presets"]).output
    assert all(f"{name}:" in text for name in PRESETS) and "distill.lr = 0.0002" in text
    data = json.loads(CliRunner().invoke(cli.app, ["presets", "--json"]).output)
    assert data == PRESETS
    for name in PRESETS:  # every preset names real fields and passes the checks
        check_config(Given(name, preset_values(name)).apply(ChainConfig()))
