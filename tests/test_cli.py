import subprocess
import sys
from pathlib import Path

import pytest

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

    main(["generate", "Hello", "--model", str(checkpoint_dir), "--max-new-tokens", "6", "--temperature", "0"])
    expected = generate(tiny_model, "Hello", max_new_tokens=6).text
    assert capsys.readouterr().out == expected + "\n"


def test_bad_option_is_a_clear_error(checkpoint_dir, capsys):
    assert main(["generate", "Hi", "--model", str(checkpoint_dir), "--top-p", "1.5"]) == 2
    assert capsys.readouterr().err == "minigpt generate: error: top_p must be in (0, 1], got 1.5\n"


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "Hi", "--model", str(tmp_path / "nope")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_help_lists_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "minigpt.cli", "generate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--model", "--max-new-tokens", "--seed", "--device", "--temperature", "--top-k", "--top-p",
                   "--min-p", "--repetition-penalty", "--no-repeat-ngram-size", "--min-new-tokens", "--stop", "--eos"):
        assert option in out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "minigpt"  # installed beside the interpreter of this venv
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out
