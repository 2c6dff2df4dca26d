"""Tests for minigpt.train: the schedule, the optimizer groups, evaluation, the loop (learning,
reproducibility, resume), the loss curve, DDP with two CPU processes, validation and the CLI hooks.

Every run uses a one-layer, 32-wide model on a short repeated random pattern, which it learns in a few
steps; the vocabulary stays GPT-2's 50,257 tokens.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minigpt import train as train_module
from minigpt.checkpoint import load_checkpoint
from minigpt.model import GPT, GPTConfig
from minigpt.train import (
    STATE_NAME,
    SeenVocab,
    TrainConfig,
    add_arguments,
    config_from_args,
    heldout_loss,
    lr_at,
    param_groups,
    plot_losses,
    run,
    schedule_progress,
    train,
)

ROOT = Path(__file__).resolve().parent.parent


def pattern(repeats: int) -> torch.Tensor:
    """48 random token ids, repeated: a tiny corpus whose next token is predictable from context."""
    ids = torch.randint(50257, (48,), generator=torch.Generator().manual_seed(0))
    return ids.repeat(repeats)


TRAIN_TOKENS = pattern(40)  # 1,920 tokens
HELDOUT_TOKENS = pattern(2)  # 96 tokens: 5 windows of 16


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(
        n_layer=1, n_head=2, n_embd=32, block_size=16, dropout=0.0, batch_size=4, max_steps=6,
        learning_rate=1e-2, min_lr=1e-3, warmup_steps=2, eval_interval=3, eval_windows=2, seed=0,
        device="cpu", out_dir=str(tmp_path / "out"), figure_path=str(tmp_path / "loss.png"),
    )
    return TrainConfig(**{**values, **overrides})


def tiny_train(config: TrainConfig):
    return train(config, TRAIN_TOKENS, HELDOUT_TOKENS, progress=False)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- the learning-rate schedule and the optimizer ------------------------------------------------------

def test_lr_warms_up_linearly_then_decays_to_min_lr():
    config = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    assert lr_at(0, config) == pytest.approx(1e-4)  # first step: 1/10 of the peak
    assert lr_at(4, config) == pytest.approx(5e-4)
    assert lr_at(10, config) == pytest.approx(1e-3)  # peak right after warmup
    assert lr_at(55, config) == pytest.approx(5.5e-4)  # halfway down the cosine: the mean of peak and min
    assert lr_at(100, config) == pytest.approx(1e-4)
    assert lr_at(500, config) == 1e-4  # past the end it stays at min_lr
    decay = [lr_at(s, config) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_lr_decay_steps_decouples_the_schedule_from_max_steps():
    short = TrainConfig(max_steps=50, lr_decay_steps=200, warmup_steps=0)
    full = TrainConfig(max_steps=200, warmup_steps=0)
    assert [lr_at(s, short) for s in range(50)] == [lr_at(s, full) for s in range(50)]


def test_weight_decay_on_2d_parameters_only():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16))
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
            "transformer.h.1.mlp.c_proj.weight"} <= decayed
    assert all(n.endswith(".weight") and "ln_" not in n for n in decayed)
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert {"transformer.ln_f.weight", "transformer.ln_f.bias", "transformer.h.0.attn.c_attn.bias"} <= undecayed
    assert all(n.endswith(".bias") or ".ln_" in n or "ln_f" in n for n in undecayed)
    # every parameter exactly once; the tied head is the token embedding, not a second tensor
    assert len(decayed) + len(undecayed) == len(list(model.parameters()))


# --- the held-out loss -----------------------------------------------------------------------------------

def test_heldout_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8)).eval()
    tokens = torch.randint(50257, (34,))  # 33 targets -> 4 windows of 8; the last target is left out
    per_token = []
    with torch.no_grad():
        for w in range(4):
            x, y = tokens[8 * w : 8 * w + 8], tokens[8 * w + 1 : 8 * w + 9]
            logp = torch.log_softmax(model(x[None])[0], dim=-1)  # (8, V)
            per_token += [-logp[t, y[t]].item() for t in range(8)]
    expected = sum(per_token) / len(per_token)
    # batch_size 3 splits the 4 windows 3 + 1: the mean must weight every token equally
    assert heldout_loss(model, tokens, block_size=8, batch_size=3) == pytest.approx(expected, rel=1e-5)
    # two windows spread evenly over the four: the first and the last
    first_and_last = (sum(per_token[:8]) + sum(per_token[24:])) / 16
    assert heldout_loss(model, tokens, block_size=8, max_windows=2) == pytest.approx(first_and_last, rel=1e-5)


def test_heldout_loss_restores_training_mode():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, dropout=0.5)).train()
    first = heldout_loss(model, torch.arange(40), block_size=8)
    assert model.training
    assert heldout_loss(model, torch.arange(40), block_size=8) == first  # no dropout while scoring


# --- the training loop -----------------------------------------------------------------------------------

def test_training_lowers_the_loss(tmp_path):
    result = tiny_train(tiny_config(tmp_path, max_steps=20, eval_interval=10))
    losses = [loss for _, loss in result.train_losses]
    assert [step for step, _ in result.train_losses] == list(range(1, 21))
    assert losses[0] == pytest.approx(math.log(50257), abs=0.3)  # untrained: about uniform
    assert max(losses[-3:]) < losses[0] - 3
    assert [step for step, _ in result.heldout_losses] == [10, 20]
    assert result.final_heldout_loss == result.heldout_losses[-1][1] < losses[0] - 3
    assert result.steps == 20 and result.tokens_per_second > 0 and not result.model.training


def test_checkpoint_and_state_are_written(tmp_path):
    config = tiny_config(tmp_path)
    result = tiny_train(config)
    assert result.checkpoint == Path(config.out_dir)
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.config.n_embd == 32
    assert_same_weights(weights(loaded), weights(result.model))
    state = torch.load(result.checkpoint / STATE_NAME, weights_only=True)
    assert state["step"] == 6 and len(state["train_losses"]) == 6 and len(state["rng"]) == 1
    assert state["config"]["n_embd"] == 32


def test_same_seed_gives_identical_weights(tmp_path):
    a = tiny_train(tiny_config(tmp_path / "a", dropout=0.1))
    b = tiny_train(tiny_config(tmp_path / "b", dropout=0.1))
    c = tiny_train(tiny_config(tmp_path / "c", dropout=0.1, seed=1))
    assert_same_weights(weights(a.model), weights(b.model))
    assert a.train_losses == b.train_losses
    assert not torch.equal(a.model.transformer.wpe.weight, c.model.transformer.wpe.weight)


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    # dropout > 0: the resumed run must also restore torch's RNG, not only the batch generator
    common = dict(dropout=0.1, lr_decay_steps=7, eval_interval=2)
    whole = tiny_train(tiny_config(tmp_path / "whole", max_steps=7, **common))
    tiny_train(tiny_config(tmp_path / "split", max_steps=3, **common))
    resumed = tiny_train(tiny_config(tmp_path / "split", max_steps=7, resume=True, **common))
    assert_same_weights(weights(resumed.model), weights(whole.model))
    assert resumed.train_losses == whole.train_losses
    assert resumed.steps == 7
    # the history carries over: evaluations at 2, 3 (end of the first run), 4, 6 and 7
    assert [step for step, _ in resumed.heldout_losses] == [2, 3, 4, 6, 7]


def test_resume_needs_a_saved_run_of_the_same_shape(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        tiny_train(tiny_config(tmp_path, resume=True))
    tiny_train(tiny_config(tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="n_embd=32, but the config asks for 64"):
        tiny_train(tiny_config(tmp_path, n_embd=64, resume=True))


def test_loss_curve_png_is_written(tmp_path):
    result = tiny_train(tiny_config(tmp_path, figure_path=str(tmp_path / "figs" / "curve.png")))
    assert result.figure == tmp_path / "figs" / "curve.png"
    assert result.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = plot_losses([(1, 10.0), (2, 8.0)], [], tmp_path / "train_only.png")  # no evaluation yet
    assert path.stat().st_size > 1000


# --- DDP: two CPU processes talking over gloo -----------------------------------------------------------

DDP_SCRIPT = """
    import hashlib, json, os, sys
    from pathlib import Path
    import torch
    from minigpt.train import TrainConfig, train

    torch.set_num_threads(1)
    tokens = torch.randint(50257, (48,), generator=torch.Generator().manual_seed(0)).repeat(20)
    config = TrainConfig(**json.loads(sys.argv[1]))
    result = train(config, tokens, tokens[:100], progress=False)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in result.model.parameters()))
    report = {"digest": digest.hexdigest(), "first_loss": result.train_losses[0][1],
              "checkpoint": str(result.checkpoint)}
    Path(config.out_dir, f"rank{os.environ['RANK']}.json").write_text(json.dumps(report))
"""


def test_ddp_two_cpu_processes_train_one_model(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    config = dict(vars(tiny_config(tmp_path, dropout=0.1)), max_steps=4, eval_interval=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), json.dumps(config)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = Path(config["out_dir"])
    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["digest"] == rank1["digest"]  # DDP kept the two copies identical
    assert rank0["first_loss"] != rank1["first_loss"]  # ... while each rank drew its own batches
    assert rank0["checkpoint"] == str(out) and rank1["checkpoint"] == "None"  # only rank 0 writes
    saved = load_checkpoint(out)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in saved.parameters()))
    assert digest.hexdigest() == rank0["digest"]
    state = torch.load(out / STATE_NAME, weights_only=True)
    assert state["step"] == 4 and len(state["rng"]) == 2  # both ranks' generators, to resume with two


# --- validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error, message", [
    (dict(n_layer=0), ValueError, r"n_layer must be an integer >= 1, got 0"),
    (dict(batch_size=2.5), TypeError, r"batch_size must be an integer >= 1, got 2.5"),
    (dict(warmup_steps=-1), ValueError, r"warmup_steps must be an integer >= 0, got -1"),
    (dict(eval_windows=0), ValueError, r"eval_windows must be an integer >= 1 or None, got 0"),
    (dict(learning_rate=0.0), ValueError, r"learning_rate must be > 0, got 0.0"),
    (dict(min_lr=1.0), ValueError, r"min_lr must be in \[0, 0.001\], got 1.0"),
    (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\), got 1.0"),
    (dict(beta2=True), TypeError, r"beta2 must be a finite number, got True"),
    (dict(grad_clip=-1.0), ValueError, r"grad_clip must be >= 0 \(0 = no clipping\), got -1.0"),
    (dict(device="gpu"), ValueError, r"device must be 'auto' or a torch device .*got 'gpu'"),
    (dict(n_head=5), ValueError, r"n_embd must be divisible by n_head, got n_embd=192 and n_head=5"),
])
def test_invalid_config_is_refused(overrides, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**overrides)


# --- the command line ------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_every_config_field_has_a_flag_with_help():
    actions = {a.dest: a for a in parser()._actions}
    for f in fields(TrainConfig):
        assert f.name in actions, f.name
        assert f"(default: {f.default})" in actions[f.name].help
    assert {"config", "progress"} <= actions.keys()


def test_flags_parse_to_config_values():
    args = parser().parse_args(["--n-layer", "3", "--learning-rate", "3e-4", "--eval-windows", "none",
                                "--resume", "--device", "cpu", "--no-progress"])
    config = config_from_args(args)
    assert (config.n_layer, config.learning_rate, config.eval_windows, config.resume) == (3, 3e-4, None, True)
    assert config.n_embd == TrainConfig().n_embd and args.progress is False  # untouched: the default


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"n_layer": 2, "max_steps": 50, "resume": True}))
    config = config_from_args(parser().parse_args(["--config", str(path), "--max-steps", "7", "--no-resume"]))
    assert (config.n_layer, config.max_steps, config.resume) == (2, 7, False)
    path.write_text(json.dumps({"n_layers": 2}))
    with pytest.raises(ValueError, match=r"unknown: \['n_layers'\]"):
        config_from_args(parser().parse_args(["--config", str(path)]))


def test_run_trains_and_prints_a_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "load_splits", lambda: (TRAIN_TOKENS, HELDOUT_TOKENS))
    config = tiny_config(tmp_path, max_steps=2)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(config).items() if not isinstance(v, bool)]
    assert run(parser().parse_args([*flags, "--no-progress"])) == 0
    printed = capsys.readouterr().out
    assert "final held-out loss:" in printed and f"checkpoint: {config.out_dir}" in printed
    assert (Path(config.out_dir) / STATE_NAME).is_file()


# --- the seen-vocabulary head --------------------------------------------------------------------------

def test_seen_vocab_loss_equals_the_full_cross_entropy():
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32)
    seen = SeenVocab.of(TRAIN_TOKENS, 50257)
    assert (len(seen.ids), seen.num_unseen, seen.compact_size) == (48, 50209, 49)
    compact = seen.shrink(GPT(config), config)
    with torch.no_grad():  # a trained-looking unseen row: far from the others, so it matters
        compact.transformer.wte.weight[-1] = torch.randn(32)
    full = seen.expand(compact, config)
    x, y = TRAIN_TOKENS[:64].view(4, 16), TRAIN_TOKENS[1:65].view(4, 16)
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        full_loss = F.cross_entropy(full.to(dtype)(x).flatten(0, 1), y.flatten())
        compact_loss = seen.loss(compact.to(dtype)(seen.compact_ids(x)).flatten(0, 1), seen.compact_ids(y).flatten())
        assert abs(full_loss.item() - compact_loss.item()) < tolerance, dtype


def test_seen_vocab_expand_and_shrink_are_exact_inverses():
    config = GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32)
    seen = SeenVocab.of(torch.tensor([5, 9, 9, 50256]), 50257)
    compact = seen.shrink(GPT(config), config)
    full = seen.expand(compact, config)
    wte = full.transformer.wte.weight
    assert full.lm_head.weight is wte and wte.shape == (50257, 32)
    assert torch.equal(wte[[5, 9, 50256]], compact.transformer.wte.weight[:3])
    assert torch.equal(wte[0], compact.transformer.wte.weight[3]) and torch.equal(wte[100], wte[0])
    assert_same_weights(weights(seen.shrink(full, config)), weights(compact))
    everything = SeenVocab.everything(50257)
    assert everything.compact_size == 50257 and everything.num_unseen == 0


def test_a_saved_model_scores_what_training_reported(tmp_path):
    result = tiny_train(tiny_config(tmp_path))
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.config.vocab_size == 50257 and not loaded.config.use_sdpa
    assert heldout_loss(loaded, HELDOUT_TOKENS, 16) == pytest.approx(result.final_heldout_loss, abs=1e-6)


# --- the time budget -----------------------------------------------------------------------------------

def test_time_budget_decays_over_the_clock_or_the_steps_whichever_ends_first():
    config = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=0, max_steps=1000, time_budget=2.0)
    assert schedule_progress(100, 0.0, config) == pytest.approx(0.1)  # the steps are ahead
    assert schedule_progress(100, 60.0, config) == pytest.approx(0.5)  # the clock is ahead
    assert lr_at(100, config, elapsed=60.0) == pytest.approx(5.5e-4)  # half way down the cosine
    assert lr_at(100, config, elapsed=120.0) == pytest.approx(1e-4)
    assert lr_at(100, TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=0, max_steps=1000),
                 elapsed=1e9) > 5e-4  # no budget: the clock is ignored


def test_a_time_budgeted_run_stops_on_time_and_saves(tmp_path):
    config = tiny_config(tmp_path, max_steps=10**6, eval_interval=10**5, time_budget=0.02)  # 1.2 s
    result = tiny_train(config)
    assert 1 <= result.steps < 10**6 and result.checkpoint is not None
    state = torch.load(result.checkpoint / STATE_NAME, weights_only=True)
    assert 1.2 <= state["elapsed"] < 60 and state["step"] == result.steps
    assert config_from_args(parser().parse_args(["--time-budget", "20"])).time_budget == 20.0


# --- checkpoints a kill cannot corrupt -----------------------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys
import torch
from minigpt import train as T

torch.set_num_threads(1)  # as the tests run (conftest): the same sums in the same order
module, name, when = sys.argv[1], sys.argv[2], int(sys.argv[3])
target = T if module == "train" else getattr(T, module)  # T.os or T.torch: the modules train.py calls
real, calls = getattr(target, name), 0

def killed_on_call(*args, **kwargs):
    global calls
    calls += 1
    if calls == when:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: like a power cut
    return real(*args, **kwargs)

setattr(target, name, killed_on_call)
tokens = torch.load(sys.argv[4])
T.train(T.TrainConfig(**eval(sys.argv[5])), tokens["train"], tokens["heldout"], progress=False)
"""


def killed_run(tmp_path: Path, config: TrainConfig, target: str, call: int) -> None:
    """Run training in a subprocess that SIGKILLs itself on the ``call``-th call of ``target``."""
    tokens = tmp_path / "tokens.pt"
    torch.save({"train": TRAIN_TOKENS, "heldout": HELDOUT_TOKENS}, tokens)
    module, name = target.split(".")
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, module, name, str(call), str(tokens),
                           repr(vars(config))], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr  # it really died inside the save


@pytest.mark.parametrize("target, call, left_behind", [
    ("torch.save", 2, ".saving"),  # writing the step-6 set, before its commit point: the step-3 set stands
    ("os.replace", 7, ".saved"),  # after the step-6 commit, one file moved: resume finishes the move
])
def test_a_kill_inside_a_save_resumes_exactly(tmp_path, target, call, left_behind):
    common = dict(dropout=0.1, max_steps=9, eval_interval=3)
    whole = tiny_train(tiny_config(tmp_path / "whole", **common))
    config = tiny_config(tmp_path / "killed", **common)
    killed_run(tmp_path, config, target, call)
    state = torch.load(Path(config.out_dir) / STATE_NAME, weights_only=True)
    assert state["step"] == 3  # the complete set on disk before the resume finishes any save
    assert (Path(config.out_dir) / left_behind).is_dir()  # the save that was killed
    resumed = tiny_train(tiny_config(tmp_path / "killed", resume=True, **common))
    assert_same_weights(weights(resumed.model), weights(whole.model))
    assert resumed.train_losses == whole.train_losses
    assert sorted(p.name for p in Path(config.out_dir).iterdir()) == ["config.json", "model.safetensors",
                                                                       "train_state.pt"]


def test_resume_refuses_files_from_different_saves(tmp_path):
    common = dict(max_steps=6, eval_interval=3)
    tiny_train(tiny_config(tmp_path / "a", **common))
    tiny_train(tiny_config(tmp_path / "b", max_steps=3, eval_interval=3))
    # b's weights (step 3) beside a's training state (step 6)
    (tmp_path / "a" / "out" / "model.safetensors").write_bytes((tmp_path / "b" / "out" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"cannot resume from .*a/out: .*a/out/model.safetensors is not the file saved with train_state.pt at step 6 .*--overwrite"):
        tiny_train(tiny_config(tmp_path / "a", resume=True, **common))
    state = tmp_path / "b" / "out" / STATE_NAME
    state.write_bytes(state.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match=r"cannot resume from .*b/out: .*b/out/train_state.pt cannot be read"):
        tiny_train(tiny_config(tmp_path / "b", resume=True, **common))


def test_out_dir_is_checked_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "load_splits", lambda: pytest.fail("trained before checking out_dir"))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    with pytest.raises(ValueError, match=r"out_dir='.*notes.txt' is a file, not a directory"):
        train(tiny_config(tmp_path, out_dir=str(a_file)))
    with pytest.raises(ValueError, match=r"out_dir='.*notes.txt/run' is not a writable directory"):
        train(tiny_config(tmp_path, out_dir=str(a_file / "run")))


def test_a_fresh_run_does_not_overwrite_a_checkpoint_unless_told(tmp_path):
    first = tiny_train(tiny_config(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match=r"already holds a checkpoint \(model.safetensors, train_state.pt\): pass "
                                         r"--resume to continue it, --overwrite to replace it, or another --out-dir"):
        tiny_train(tiny_config(tmp_path, max_steps=2))
    again = tiny_train(tiny_config(tmp_path, max_steps=2, overwrite=True))
    assert_same_weights(weights(again.model), weights(first.model))


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "load_splits", lambda: (TRAIN_TOKENS, HELDOUT_TOKENS))
    real_step, steps = train_module._train_step, []

    def interrupted_at_step_5(*args):
        steps.append(1)
        if len(steps) == 5:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(train_module, "_train_step", interrupted_at_step_5)
    config = tiny_config(tmp_path)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(config).items() if v is not None and not isinstance(v, bool)]
    assert run(parser().parse_args([*flags, "--no-progress"])) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted at step 4; the last checkpoint is {config.out_dir} (step 3): run the same "
                   "command with --resume to continue from it")


# --- settings refused before any work: the device, the DDP environment ------------------------------------

def cli_train(tmp_path: Path, *flags: str) -> list[str]:
    """Arguments of ``minigpt train`` for the tiny run of :func:`tiny_config`, then ``flags``."""
    config = tiny_config(tmp_path)
    return ["train", *[f"--{k.replace('_', '-')}={v}" for k, v in vars(config).items()
                       if v is not None and not isinstance(v, bool)], "--no-progress", *flags]


def test_a_device_this_machine_lacks_is_named_before_any_work(tmp_path, monkeypatch, capsys):
    from minigpt import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, whatever this one is
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(train_module, "load_splits", lambda: pytest.fail("started work on a missing device"))
    assert cli.main(cli_train(tmp_path, "--device", "cuda")) == 2
    assert capsys.readouterr().err.strip() == ("minigpt train: error: device must be a device this machine has "
                                               "(available: cpu; CUDA is not available), got 'cuda'")
    assert not (tmp_path / "out").exists()  # not even out_dir was created


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 but the environment variable RANK is not set: start DDP runs with "
                          "torchrun, which sets WORLD_SIZE, RANK and LOCAL_RANK, or unset WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "WORLD_SIZE=2 but the environment variable LOCAL_RANK is not set"),
    ({"WORLD_SIZE": "two"}, "the environment variable WORLD_SIZE must be an integer >= 1, got 'two'"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"},
     "the environment variable RANK must be below WORLD_SIZE=2, got 2"),
])
def test_a_ddp_environment_without_its_ranks_is_named(tmp_path, monkeypatch, capsys, env, message):
    from minigpt import cli

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(train_module, "load_splits", lambda: pytest.fail("started work without the ranks"))
    assert cli.main(cli_train(tmp_path)) == 2
    assert capsys.readouterr().err.strip().startswith(f"minigpt train: error: {message}")


# --- an interrupted save is checked before it replaces anything --------------------------------------------

def interrupted_after_commit(tmp_path: Path) -> Path:
    """out_dir with its step-3 checkpoint and, in .saved, the complete step-6 set of a save killed right
    after its commit point (as the SIGKILL test leaves it, without the subprocess, which finishes it)."""
    tiny_train(tiny_config(tmp_path / "three", max_steps=3, eval_interval=3))
    tiny_train(tiny_config(tmp_path / "six", max_steps=6, eval_interval=3))
    out = tmp_path / "three" / "out"
    (tmp_path / "six" / "out").rename(out / ".saved")
    return out


@pytest.mark.parametrize("damage, problem", [
    ("model.safetensors", r"model.safetensors is not the file saved with train_state.pt at step 6 \(it was "
                          r"changed, truncated or comes from another save\)"),
    ("train_state.pt", r"train_state.pt cannot be read"),
])
def test_resume_refuses_a_damaged_interrupted_save_and_keeps_the_good_checkpoint(tmp_path, damage, problem):
    out = interrupted_after_commit(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (out / ".saved" / damage).write_bytes((out / ".saved" / damage).read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match=rf"cannot resume from .*three/out: .*three/out/.saved holds an "
                                         rf"interrupted save that is damaged \(.*three/out/.saved/{problem}.*\); "
                                         rf"nothing was moved, so the checkpoint in .*three/out is as it was: "
                                         rf"delete .*three/out/.saved to resume from it"):
        tiny_train(tiny_config(tmp_path / "three", max_steps=6, eval_interval=3, resume=True))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # the step-3 set, untouched
    assert sorted(p.name for p in (out / ".saved").iterdir()) == ["config.json", "model.safetensors",
                                                                  "train_state.pt"]
    shutil.rmtree(out / ".saved")  # as the message says: then the step-3 checkpoint resumes
    assert tiny_train(tiny_config(tmp_path / "three", max_steps=4, eval_interval=3, resume=True)).steps == 4


def test_resume_says_when_a_damaged_interrupted_save_was_partly_moved(tmp_path):
    out = interrupted_after_commit(tmp_path)
    os.replace(out / ".saved" / "train_state.pt", out / "train_state.pt")  # a kill after the first move
    (out / ".saved" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"damaged \(.*config.json is not the file saved with train_state.pt at step 6 .*\)"
                                         r"; train_state.pt had already been moved into .*out, so it holds no "
                                         r"complete checkpoint either"):
        tiny_train(tiny_config(tmp_path / "three", max_steps=6, eval_interval=3, resume=True))


# --- a full disk during a save ---------------------------------------------------------------------------

def test_a_full_disk_during_a_save_names_it_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    from minigpt import cli

    monkeypatch.setattr(train_module, "load_splits", lambda: (TRAIN_TOKENS, HELDOUT_TOKENS))
    real_save, saves = torch.save, []

    def disk_full_on_the_second_save(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # the final save, at step 6; the one at step 3 went through
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_on_the_second_save)
    out = tmp_path / "out"
    assert cli.main(cli_train(tmp_path)) == 1
    assert capsys.readouterr().err.strip() == (
        f"minigpt train: error: saving the checkpoint of step 6 to {out} failed (No space left on device); the "
        "last good checkpoint (step 3) is kept there: once the cause is fixed, run the same command with --resume "
        "to continue from it")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]
    assert torch.load(out / STATE_NAME, weights_only=True)["step"] == 3  # whole, and still step 3


def test_a_safetensors_error_in_the_first_save_says_nothing_was_saved(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def disk_full(model, path, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(train_module, "save_checkpoint", disk_full)
    config = tiny_config(tmp_path)
    with pytest.raises(train_module.SaveFailed) as caught:
        tiny_train(config)
    assert str(caught.value) == (f"saving the checkpoint of step 3 to {config.out_dir} failed (Error while "
                                 "serializing: I/O error: No space left on device (os error 28)); no checkpoint "
                                 "of this run had been saved yet")
    assert list(Path(config.out_dir).iterdir()) == []  # the unfinished .saving was removed


# --- Ctrl-C at every phase -------------------------------------------------------------------------------

def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("resume", [False, True])
def test_ctrl_c_while_starting_up_says_nothing_was_trained(tmp_path, monkeypatch, capsys, resume):
    from minigpt import cli

    if resume:
        tiny_train(tiny_config(tmp_path, max_steps=3))
        monkeypatch.setattr(train_module, "load_checkpoint", interrupt)  # while reading the saved run
    else:
        monkeypatch.setattr(train_module, "load_splits", interrupt)  # while reading the corpus
    assert cli.main(cli_train(tmp_path, *(["--resume"] if resume else []))) == 130
    kept = (f"nothing new was trained, and the checkpoint in {tmp_path / 'out'} is kept: run the same command "
            "to resume from it" if resume else "nothing was trained or saved")
    assert capsys.readouterr().err.strip() == f"interrupted while starting up, before the first step: {kept}"


def interrupt_the_final_evaluation(monkeypatch) -> None:
    """Make heldout_loss raise KeyboardInterrupt when it scores every window (the final evaluation only)."""
    real_heldout_loss = train_module.heldout_loss

    def interrupted_when_final(model, tokens, block_size, max_windows=None, **kwargs):
        if max_windows is None:
            raise KeyboardInterrupt
        return real_heldout_loss(model, tokens, block_size, max_windows, **kwargs)

    monkeypatch.setattr(train_module, "heldout_loss", interrupted_when_final)
    monkeypatch.setattr(train_module, "load_splits", lambda: (TRAIN_TOKENS, HELDOUT_TOKENS))


def test_ctrl_c_in_the_final_evaluation_saves_the_steps_first(tmp_path, monkeypatch, capsys):
    from minigpt import cli

    interrupt_the_final_evaluation(monkeypatch)
    out = tmp_path / "out"
    assert cli.main(cli_train(tmp_path)) == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted during the final held-out evaluation; the weights of step 6 were saved to {out} without it: "
        "run the same command with --resume to score them")
    assert torch.load(out / STATE_NAME, weights_only=True)["step"] == 6
    monkeypatch.undo()
    resumed = tiny_train(tiny_config(tmp_path, resume=True))  # trains nothing more, scores and saves
    assert resumed.steps == 6 and len(resumed.train_losses) == 6 and resumed.final_heldout_loss is not None
    assert resumed.heldout_losses[-1] == (6, resumed.final_heldout_loss)


def test_a_second_ctrl_c_during_that_save_names_the_checkpoint_that_stands(tmp_path, monkeypatch, capsys):
    from minigpt import cli

    interrupt_the_final_evaluation(monkeypatch)
    real_save, saves = torch.save, []

    def interrupted_on_the_second_save(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # the save after the final evaluation's Ctrl-C; the step-3 one went through
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_on_the_second_save)
    assert cli.main(cli_train(tmp_path)) == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted at step 6; the last checkpoint is {tmp_path / 'out'} (step 3): run the same command with "
        "--resume to continue from it")
    assert torch.load(tmp_path / "out" / STATE_NAME, weights_only=True)["step"] == 3
