import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt import cli
from minigpt.checkpoint import save_checkpoint
from minigpt.cli import main


@pytest.fixture
def checkpoint_dir(tiny_model, tmp_path):
    return save_checkpoint(tiny_model, tmp_path / "tiny")


def test_generate_streams_the_continuation(checkpoint_dir, capsys):
    assert main(["generate", "ROMEO:", "--model", str(checkpoint_dir), "--max-new-tokens", "5", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and first.endswith("\n")
    main(["generate", "ROMEO:", "--model", str(checkpoint_dir), "--max-new-tokens", "5", "--seed", "1"])
    assert capsys.readouterr().out == first  # same seed, same text


def test_generate_greedy_matches_the_library(checkpoint_dir, tiny_model, capsys):
    from minigpt.generate import generate

    # --readable: the library's own loop (the fast path's tokens, checked against it, are tests/test_cli_fast.py's)
    main(["generate", "Hello", "--model", str(checkpoint_dir), "--max-new-tokens", "6", "--temperature", "0",
          "--readable"])
    expected = generate(tiny_model, "Hello", max_new_tokens=6).text
    assert capsys.readouterr().out == expected + "\n"


def test_generate_with_int8_weights(capsys, monkeypatch):
    from minigpt.generate import generate
    from minigpt.quantize import Int8Linear

    quantized = []

    def spy(model, kernel):
        quantized.append(cli_quantize(model, kernel))
        return quantized[-1]

    cli_quantize = cli.quantize_model
    monkeypatch.setattr(cli, "quantize_model", spy)
    # the readable loop's int8 model (the fast path's tokens are tests/test_cli_fast.py's)
    main(["generate", "ROMEO:", "--weights", "int8", "--max-new-tokens", "12", "--temperature", "0", "--readable"])
    (int8,) = quantized
    assert isinstance(int8.lm_head, Int8Linear)
    assert capsys.readouterr().out == generate(int8, "ROMEO:", max_new_tokens=12).text + "\n"


def test_bad_option_is_a_clear_error(checkpoint_dir, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_model", lambda *a, **kw: pytest.fail("the model was loaded before the check"))
    assert main(["generate", "Hi", "--model", str(checkpoint_dir), "--top-p", "1.5"]) == 2
    assert capsys.readouterr().err == "minigpt generate: error: top_p must be in (0, 1], got 1.5\n"
    assert main(["generate", "Hi", "--model", str(checkpoint_dir), "--max-new-tokens", "3", "--min-new-tokens", "5"]) == 2
    assert capsys.readouterr().err == "minigpt generate: error: min_new_tokens must be <= max_new_tokens=3, got 5\n"


def test_the_sampling_family_flags_reach_the_library(checkpoint_dir, tiny_model, capsys):
    from minigpt.generate import generate
    from minigpt.tokenizer import encode

    flags = ["--typical-p", "0.9", "--epsilon-cutoff", "0.0001", "--frequency-penalty", "0.5", "--presence-penalty",
             "-0.3", "--ban", " the", "--ban", "ab", "--bias", " love=2.5", "--bias", "a=b=-1"]
    main(["generate", "Hello", "--model", str(checkpoint_dir), "--max-new-tokens", "8", "--seed", "3", "--readable",
          *flags])
    expected = generate(tiny_model, "Hello", max_new_tokens=8, seed=3, do_sample=True, temperature=0.8, top_k=50,
                        typical_p=0.9, epsilon_cutoff=0.0001, frequency_penalty=0.5, presence_penalty=-0.3,
                        bad_words_ids=[encode(" the"), encode("ab")],
                        sequence_bias={tuple(encode(" love")): 2.5, tuple(encode("a=b")): -1.0}).text
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ban", ""], "argument --ban: must be a non-empty text, got ''"),
        (["--bias", "love"], "argument --bias: must be TEXT=VALUE with VALUE a number, e.g. ' love=2', got 'love'"),
        (["--bias", "love=much"], "argument --bias: must be TEXT=VALUE with VALUE a number, e.g. ' love=2', got 'love=much'"),
        (["--bias", "=2"], "argument --bias: must be TEXT=VALUE with VALUE a number, e.g. ' love=2', got '=2'"),
    ],
)
def test_bad_ban_or_bias_is_a_usage_error(checkpoint_dir, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "Hi", "--model", str(checkpoint_dir), *flags])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(f"minigpt generate: error: {message}\n")


def test_bad_sampling_family_value_is_refused_before_loading(checkpoint_dir, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_model", lambda *a, **kw: pytest.fail("the model was loaded before the check"))
    assert main(["generate", "Hi", "--model", str(checkpoint_dir), "--frequency-penalty", "3"]) == 2
    assert capsys.readouterr().err == "minigpt generate: error: frequency_penalty must be a number in [-2, 2], got 3.0\n"


@pytest.mark.parametrize("weights", ["float", "int8", "fp16", "bf16"])
def test_q8_0_activations_need_a_block_format(checkpoint_dir, capsys, monkeypatch, weights):
    monkeypatch.setattr(cli, "load_model", lambda *a, **kw: pytest.fail("the model was loaded before the check"))
    assert main(["generate", "Hi", "--model", str(checkpoint_dir), "--weights", weights, "--activations", "q8_0"]) == 2
    assert capsys.readouterr().err == (f"minigpt generate: error: --activations q8_0 needs --weights q8_0 or q4_0 (llama.cpp's "
                                       f"arithmetic on its blocks), got --weights {weights}; other weights take "
                                       "--activations float32\n")


def test_an_unknown_activations_format_is_a_usage_error(checkpoint_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "Hi", "--model", str(checkpoint_dir), "--weights", "q4_0", "--activations", "int8"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err  # newer Pythons leave the choices unquoted
    assert re.search(r"minigpt generate: error: argument --activations: invalid choice: 'int8' \(choose from "
                     r"'?float32'?, '?q8_0'?\)\n$", err)


def test_the_readable_loop_rounds_the_activations_as_asked(tiny_model):
    from minigpt.quantize import round_weights

    ids = torch.tensor([[15496, 11, 995, 13]])
    with torch.no_grad():
        logits = cli.readable_model(tiny_model, "q4_0", activations="q8_0")(ids)
        assert torch.equal(logits, round_weights(tiny_model, "q4_0", activations="q8_0")(ids))
        assert not torch.equal(logits, round_weights(tiny_model, "q4_0")(ids))  # the activations were rounded


@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda", "argument --device: must be a device this machine has (available: cpu; CUDA is not available), got 'cuda'"),
        ("cuda:1", "argument --device: must be a device this machine has (available: cpu; CUDA is not available), got 'cuda:1'"),
        ("foo", "argument --device: must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'foo'"),
    ],
)
def test_bad_device_is_a_usage_error(checkpoint_dir, capsys, monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "Hi", "--model", str(checkpoint_dir), "--device", device])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: minigpt generate") and err.endswith(f"minigpt generate: error: {message}\n")


def test_bad_device_exit_status_of_the_command(checkpoint_dir):
    run = subprocess.run([sys.executable, "-m", "minigpt.cli", "generate", "Hi", "--model", str(checkpoint_dir),
                          "--device", "foo"], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.endswith("minigpt generate: error: argument --device: must be 'cpu', 'cuda', 'cuda:N' or 'mps', "
                               "got 'foo'\n")


def test_endoftext_in_the_prompt_names_the_flag(checkpoint_dir, tiny_model, capsys):
    from minigpt.generate import generate

    prompt = "Hi<|endoftext|>ROMEO:"
    assert main(["generate", prompt, "--model", str(checkpoint_dir)]) == 2
    assert capsys.readouterr().err == (
        "minigpt generate: error: the prompt contains <|endoftext|>; pass --allow-special to read it as the "
        "end-of-text token (id 50256), or remove it from the prompt\n"
    )
    args = ["generate", prompt, "--model", str(checkpoint_dir), "--allow-special", "--temperature", "0",
            "--max-new-tokens", "4", "--readable"]
    assert main(args) == 0
    expected = generate(tiny_model, prompt, max_new_tokens=4, allow_special=True).text
    assert capsys.readouterr().out == expected + "\n"


def test_token_healing_flag_reaches_the_library_and_silences_the_warning(checkpoint_dir, tiny_model, capsys):
    from minigpt.generate import generate

    prompt = "Juliet.\nO Romeo!\n\n"  # ends in "\n\n" (token 628), where the corpus has "\n", "\n"
    args = ["generate", prompt, "--model", str(checkpoint_dir), "--max-new-tokens", "4", "--temperature", "0",
            "--readable"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.out == generate(tiny_model, prompt, max_new_tokens=4).text + "\n"
    assert out.err.startswith("minigpt generate: warning: the prompt ends in token 628 '\\n\\n': of the ")
    assert out.err.endswith("try --token-healing, or end the prompt before these characters\n")
    assert out.err.count("\n") == 1  # one line
    assert main(args + ["--token-healing"]) == 0
    out = capsys.readouterr()
    assert out.out == generate(tiny_model, prompt, max_new_tokens=4, token_healing=True).text + "\n"
    assert out.err == ""


def test_no_warning_on_a_clean_prompt(checkpoint_dir, capsys):
    assert main(["generate", "ROMEO:", "--model", str(checkpoint_dir), "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().err == ""


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "Hi", "--model", str(tmp_path / "nope")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_help_lists_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "minigpt.cli", "generate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--model", "--max-new-tokens", "--seed", "--device", "--temperature", "--top-k", "--top-p",
                   "--min-p", "--repetition-penalty", "--no-repeat-ngram-size", "--min-new-tokens", "--stop", "--eos", "--allow-special",
                   "--typical-p", "--epsilon-cutoff", "--eta-cutoff", "--frequency-penalty", "--presence-penalty", "--ban",
                   "--bias", "--token-healing"):
        assert option in out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "minigpt"  # installed beside the interpreter of this venv
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out


def test_the_logits_flags_are_the_settings_fields():
    import argparse
    import dataclasses

    from minigpt.logits import LogitsSettings

    parser = cli.build_parser("generate")
    generate = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["generate"]
    group = next(g for g in generate._action_groups if g.title.startswith("logits settings"))
    flags = {action.dest: action for action in group._group_actions}
    with_a_flag = [f for f in dataclasses.fields(LogitsSettings) if f.metadata["name"] is not None]
    assert list(flags) == [f.name for f in with_a_flag]
    assert "prefix_allowed_tokens_fn" not in flags  # a function has no flag
    for f in with_a_flag:
        assert flags[f.name].help.startswith(f.metadata["help"])


def test_generate_imports_only_what_it_uses(checkpoint_dir):
    code = ("import sys; from minigpt.cli import main; main(['generate', 'Hi', '--model', sys.argv[1], "
            "'--max-new-tokens', '2']); print(sorted(m for m in sys.modules if m.startswith('minigpt')))")
    out = subprocess.run([sys.executable, "-c", code, str(checkpoint_dir)], capture_output=True, text=True,
                         check=True).stdout
    loaded = out.splitlines()[-1]
    for module in ("minigpt.bench", "minigpt.train", "minigpt.export", "minigpt.widget", "minigpt.viz", "minigpt.roofline"):
        assert f"'{module}'" not in loaded


# ---- bad flag values end in one sentence with the reason (issue 29) ----


def test_a_temperature_below_the_floor_is_refused(checkpoint_dir, capsys):
    assert main(["generate", "Hi", "--model", str(checkpoint_dir), "--temperature", "1e-45"]) == 2
    err = capsys.readouterr().err
    assert err == ("minigpt generate: error: temperature must be 0 (greedy decoding) or at least 0.0001 (below it, "
                   "logits / temperature can overflow float32, and sampling is greedy decoding anyway), got 1e-45\n")
    args = ["generate", "Hi", "--model", str(checkpoint_dir), "--temperature", "0.0001", "--max-new-tokens", "2"]
    assert main(args) == 0  # the floor itself samples


@pytest.mark.parametrize("flag, value", [("--ban", "<|endoftext|>"), ("--bias", "<|endoftext|>=2"),
                                         ("--ban", "Hi<|endoftext|>")])
def test_endoftext_in_a_ban_or_bias_says_why(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "Hi", flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (f"minigpt generate: error: argument {flag}: TEXT must be plain text without the special token "
                   "'<|endoftext|>' (it is the end-of-text token 50256, not text: to keep it from being generated, "
                   f"use --suppress-tokens 50256), got {value!r}")
