"""Train a GPT on the Shakespeare corpus: the training loop, its schedule, evaluation, resume and DDP.

One step: draw a random batch, predict every next token, measure the cross-entropy, backpropagate, clip the
gradient, and let AdamW move the weights at the learning rate of that step (linear warmup, then cosine
decay). Every ``eval_interval`` steps and at the end the model is scored on held-out text it never trains
on, and the weights are saved (``save_checkpoint``) with a ``train_state.pt`` beside them that holds
everything else a run needs to continue exactly where it stopped: optimizer moments, step, loss history and
the random number generators.

    python -m minigpt.train --max-steps 2000                  # one process: GPU if there is one, else CPU
    torchrun --standalone --nproc_per_node 8 -m minigpt.train  # DDP: one process per GPU

>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> config = TrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, batch_size=2, max_steps=3,
...                      out_dir=out, figure_path=f"{out}/loss.png")
>>> result = train(config, torch.arange(200), torch.arange(100), progress=False)
>>> result.steps, len(result.train_losses)
(3, 3)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from minigpt.arguments import add_dataclass_arguments, dataclass_from_args, option
from minigpt.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint
from minigpt.checks import check_device, check_int, check_real, check_writable_dir
from minigpt.data import get_batch, heldout_windows, load_splits
from minigpt.model import GPT, GPTConfig

STATE_NAME = "train_state.pt"  # optimizer, step, losses and RNG states, next to the checkpoint's files


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults train the ~12M-parameter Shakespeare model."""

    # --- the model; the vocabulary is always GPT-2's 50,257 tokens
    n_layer: int = option(6, "transformer blocks")
    n_head: int = option(6, "attention heads per block; must divide n_embd")
    n_embd: int = option(192, "width of the residual stream")
    block_size: int = option(256, "context length in tokens: the length of every training window")
    dropout: float = option(0.2, "fraction of activations zeroed while training; fights overfitting")
    # --- the optimisation
    batch_size: int = option(16, "windows per step (per process under DDP)")
    max_steps: int = option(2000, "optimizer steps to train for, counted from the very first step")
    learning_rate: float = option(1e-3, "peak learning rate, reached at the end of warmup")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = option(100, "steps of linear warmup from ~0 to learning_rate")
    lr_decay_steps: int | None = option(
        None, "step at which the cosine decay reaches min_lr; none = max_steps. Set it to stop a run "
        "early and resume it later on the same schedule")
    time_budget: float | None = option(
        None, "minutes of wall-clock time to train for: the cosine decay runs over this time instead of "
        "the steps, and the run stops when it is spent (or at max_steps, whichever comes first), then "
        "scores and saves. Not bit-reproducible: how many steps fit depends on the machine")
    seen_vocab_head: bool = option(
        True, "train the output layer over the token ids the training split uses plus one shared row "
        "for all others: the same loss, about half the step time on a CPU (see SeenVocab)")
    weight_decay: float = option(0.1, "AdamW weight decay, applied to 2-D parameters only")
    beta1: float = option(0.9, "AdamW beta1: decay rate of the gradient's running mean")
    beta2: float = option(0.99, "AdamW beta2: decay rate of the squared gradient's running mean")
    grad_clip: float = option(1.0, "clip the gradient's global L2 norm to this; 0 = no clipping")
    # --- evaluation, reproducibility, where things go
    eval_interval: int = option(250, "score held-out text and save a checkpoint every this many steps")
    eval_windows: int | None = option(
        100, "held-out windows scored at each mid-training evaluation; none = all (the final one uses all)")
    seed: int = option(1337, "seed for the initial weights, dropout and batches: same seed, same run")
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps …")
    out_dir: str = option("out", "directory for the checkpoint and train_state.pt")
    resume: bool = option(False, "continue the run saved in out_dir instead of starting afresh")
    overwrite: bool = option(False, "start afresh even if out_dir holds a checkpoint, deleting it")
    figure_path: str = option("figures/loss_curve.png", "where to write the loss curve (PNG)")

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_steps", "eval_interval"):
            check_int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "seed"):
            check_int(name, getattr(self, name), 0)
        for name in ("lr_decay_steps", "eval_windows"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, also="None")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "dropout", "beta1", "beta2"):
            check_real(name, getattr(self, name), "a finite number", math.isfinite)
        if self.time_budget is not None:
            check_real("time_budget", self.time_budget, "a positive number of minutes, or None",
                       lambda minutes: math.isfinite(minutes) and minutes > 0)
        _check_range(self, "learning_rate", self.learning_rate > 0, "> 0")
        _check_range(self, "min_lr", 0 <= self.min_lr <= self.learning_rate, f"in [0, {self.learning_rate}]")
        _check_range(self, "weight_decay", self.weight_decay >= 0, ">= 0")
        _check_range(self, "grad_clip", self.grad_clip >= 0, ">= 0 (0 = no clipping)")
        for name in ("dropout", "beta1", "beta2"):
            _check_range(self, name, 0 <= getattr(self, name) < 1, "in [0, 1)")
        _check_device(self.device)
        self.model_config()  # GPTConfig checks the shape, e.g. that n_head divides n_embd

    def model_config(self) -> GPTConfig:
        """The GPTConfig of the model this run trains.

        >>> TrainConfig(n_layer=2).model_config().n_layer
        2
        """
        return GPTConfig(block_size=self.block_size, n_layer=self.n_layer, n_head=self.n_head,
                         n_embd=self.n_embd, dropout=self.dropout)


@dataclass
class TrainResult:
    """What a run produced. Losses are in nats per token; steps count optimizer updates, resumes included."""

    steps: int  # optimizer steps done in total
    final_heldout_loss: float | None  # on every held-out window; None on DDP ranks other than 0
    num_parameters: int
    tokens_per_second: float  # training steps only (evaluation and saving excluded), all processes together
    wall_time: float  # seconds this call took
    checkpoint: Path | None  # None on DDP ranks other than 0, which write nothing
    figure: Path | None
    train_losses: list[tuple[int, float]] = field(repr=False)  # (step, loss of that step's batch)
    heldout_losses: list[tuple[int, float]] = field(repr=False)  # (step, held-out loss after that step)
    model: GPT = field(repr=False)  # the trained model (unwrapped from DDP), in eval mode


# --- the learning rate and the optimizer -------------------------------------------------------------

def lr_at(step: int, config: TrainConfig, elapsed: float = 0.0) -> float:
    """The learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine decay to min_lr.

    Warmup keeps the first updates small while Adam's moment estimates are still noise; the cosine decay
    lets the weights settle at the end. The decay follows :func:`schedule_progress`: the steps, or, under a
    time budget, the ``elapsed`` seconds, whichever is further along.

    >>> config = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    >>> lr_at(0, config), lr_at(10, config), lr_at(60, config), lr_at(110, config)
    (0.0001, 0.001, 0.00055, 0.0001)
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = schedule_progress(step, elapsed, config)  # 0 -> 1
    if progress >= 1.0:
        return config.min_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_lr + coeff * (config.learning_rate - config.min_lr)


def schedule_progress(step: int, elapsed: float, config: TrainConfig) -> float:
    """How far the cosine decay has gone: 0 after warmup, 1 at its end (and beyond 1 past it).

    Counted in steps (up to ``lr_decay_steps``, else ``max_steps``); with a ``time_budget`` also in
    seconds, and the further of the two wins, so the decay always ends when the run does: a slow machine
    runs out of time first, a fast one out of steps.

    >>> config = TrainConfig(warmup_steps=0, max_steps=1000, time_budget=10.0)  # 10 minutes
    >>> schedule_progress(100, elapsed=300.0, config=config)  # 10% of the steps, but half the time
    0.5
    """
    decay_steps = config.lr_decay_steps or config.max_steps
    by_steps = (step - config.warmup_steps) / max(decay_steps - config.warmup_steps, 1)
    if config.time_budget is None:
        return by_steps
    return max(by_steps, elapsed / (60.0 * config.time_budget))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on every 2-D parameter, none on the 1-D ones.

    This is nanoGPT's rule. The 2-D parameters are the matrices of the linear layers and the token and
    position embeddings: decay pulls them towards zero, which regularises. The 1-D ones are biases and
    LayerNorm gains and shifts: they set offsets and scales, and shrinking a gain towards 0 only hurts.

    >>> groups = param_groups(GPT(GPTConfig.from_preset("tiny")), weight_decay=0.1)
    >>> [(g["weight_decay"], len(g["params"])) for g in groups]
    [(0.1, 10), (0.0, 18)]
    """
    params = [p for p in model.parameters() if p.requires_grad]  # the tied head appears once
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with :func:`param_groups`; the learning rate is set before every step by :func:`lr_at`.

    >>> make_optimizer(GPT(GPTConfig.from_preset("tiny")), TrainConfig()).defaults["betas"]
    (0.9, 0.99)
    """
    on_cuda = next(model.parameters()).is_cuda
    # On CUDA the fused kernel updates every parameter in one launch. On CPU a fused kernel exists too, but
    # it trained at the same tokens/s as the default on 2 cores (1,489 against 1,482 for the 12.4M model).
    return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.learning_rate,
                             betas=(config.beta1, config.beta2), fused=True if on_cuda else None)


# --- the seen-vocabulary head --------------------------------------------------------------------------

@dataclass
class SeenVocab:
    """The vocabulary a run trains its output layer on: the ids its training split uses, plus one row.

    Why: the output layer scores all 50,257 GPT-2 tokens at every position, and on a CPU it and its
    cross-entropy are most of a training step. The Shakespeare training split uses only ~19,000 ids. The
    other U ~ 31,000 are never an input or a target, so training only ever pushes their logits down, all in
    the same way: give them one shared embedding row u. Then the softmax's denominator holds U equal terms
    exp(h·u), which are one term exp(h·u + log U). So the cross-entropy over the S seen logits plus one
    column h·u + log U is *exactly* the full-vocabulary cross-entropy, at a fraction of the cost.

    The compact model is a GPT whose vocabulary is S + 1 rows (the seen ids in order, then u);
    :meth:`expand` turns it into a plain 50,257-row GPT (u copied into every unseen row) to evaluate and
    save, and :meth:`shrink` goes back (to resume). With every id seen, the compact model is the full one.

    >>> seen = SeenVocab.of(torch.tensor([7, 3, 7, 9]), vocab_size=10)
    >>> seen.ids.tolist(), seen.num_unseen, seen.compact_ids(torch.tensor([9, 3, 5])).tolist()
    ([3, 7, 9], 7, [2, 0, 3])
    """

    ids: torch.Tensor  # (S,) the seen ids, sorted
    vocab_size: int  # the full vocabulary: 50,257 for GPT-2

    @classmethod
    def of(cls, tokens: torch.Tensor, vocab_size: int) -> SeenVocab:
        """The ids that occur in ``tokens`` (the training split only: held-out text must not leak in)."""
        return cls(torch.unique(tokens.cpu()), vocab_size)

    @classmethod
    def everything(cls, vocab_size: int) -> SeenVocab:
        """Every id counted as seen: the compact model is the full one (the plain head)."""
        return cls(torch.arange(vocab_size), vocab_size)

    @property
    def num_unseen(self) -> int:
        return self.vocab_size - len(self.ids)

    @property
    def compact_size(self) -> int:
        """Rows of the compact vocabulary: the seen ids, plus the shared row if any id is unseen."""
        return len(self.ids) + (self.num_unseen > 0)

    def compact_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` renumbered into the compact vocabulary; every unseen id becomes the shared row S."""
        lookup = torch.full((self.vocab_size,), len(self.ids), dtype=torch.long)
        lookup[self.ids] = torch.arange(len(self.ids))
        return lookup.to(tokens.device)[tokens]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of compact ``logits`` (N, S + 1) against compact ``targets`` (N,). It equals
        the full-vocabulary cross-entropy: the shared column stands for num_unseen equal logits."""
        if self.num_unseen > 0:
            shift = torch.zeros(self.compact_size, dtype=logits.dtype, device=logits.device)
            shift[-1] = math.log(self.num_unseen)  # U terms exp(h·u) = one term exp(h·u + log U)
            logits = logits + shift
        return F.cross_entropy(logits, targets)

    def shrink(self, model: GPT, config: GPTConfig) -> GPT:
        """A compact GPT of shape ``config`` (its vocab_size replaced) with a full ``model``'s weights."""
        wte = model.transformer.wte.weight.detach()  # (V, C)
        rows = [wte[self.ids]] + ([wte[self._first_unseen()][None]] if self.num_unseen else [])
        return self._with_embedding(model, replace(config, vocab_size=self.compact_size), torch.cat(rows))

    def expand(self, compact: GPT, config: GPTConfig) -> GPT:
        """The full GPT of shape ``config``: the seen rows in their places, the shared row in every other."""
        rows = compact.transformer.wte.weight.detach()  # (S [+ 1], C)
        wte = rows[-1].expand(self.vocab_size, -1).clone()  # (V, C): every row the shared one ...
        wte[self.ids] = rows[: len(self.ids)]  # ... then each seen id gets its own
        return self._with_embedding(compact, config, wte)

    def _first_unseen(self) -> int:
        seen = torch.zeros(self.vocab_size, dtype=torch.bool)
        seen[self.ids] = True
        return int((~seen).nonzero()[0])

    @staticmethod
    def _with_embedding(model: GPT, config: GPTConfig, wte: torch.Tensor) -> GPT:
        """A new GPT of shape ``config`` holding copies of ``model``'s weights, except the token embedding
        (and so the head tied to it), which is ``wte``."""
        state = {name: t.clone() for name, t in model.state_dict().items() if name != "lm_head.weight"}
        state["transformer.wte.weight"] = wte.clone()
        with torch.device("meta"):  # no memory and no random init, which would use up the dropout RNG
            new = GPT(config)
        new.load_state_dict(state, strict=False, assign=True)  # the copies become the parameters
        new.lm_head.weight = new.transformer.wte.weight  # assign replaced wte: tie the head again
        return new.train(model.training)


# --- evaluation ----------------------------------------------------------------------------------------

@torch.no_grad()
def heldout_loss(model: GPT, tokens: torch.Tensor, block_size: int, max_windows: int | None = None,
                 batch_size: int = 8) -> float:
    """Mean cross-entropy, in nats per token, over non-overlapping ``block_size`` windows of ``tokens``.

    Every target is scored once (see ``heldout_windows``). ``max_windows`` scores only that many windows,
    spread evenly over ``tokens`` so a quick estimate still sees every held-out work. Dropout is off while
    scoring; the model's train/eval mode is restored afterwards. ``batch_size`` only trades speed for
    memory: the logits of one batch take batch_size × block_size × 50,257 floats.

    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> round(heldout_loss(model, torch.arange(100), block_size=16), 1)  # ~ln(50257) when untrained
    10.8
    """
    x, y = heldout_windows(tokens, block_size)  # (N, T) each
    if max_windows is not None and max_windows < len(x):
        pick = torch.linspace(0, len(x) - 1, max_windows).round().long()
        x, y = x[pick], y[pick]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        with _autocast(device):
            logits = model(xb)  # (b, T, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), yb.flatten(), reduction="sum").item()
    model.train(was_training)
    return total / y.numel()


def plot_losses(train_losses: list[tuple[int, float]], heldout_losses: list[tuple[int, float]],
                path: str | Path, title: str = "Training and held-out loss") -> Path:
    """Draw training and held-out loss against step and write it as a PNG to ``path``.

    >>> import tempfile
    >>> plot_losses([(1, 10.8), (2, 9.5)], [(2, 9.9)], Path(tempfile.mkdtemp()) / "loss.png").suffix
    '.png'
    """
    from matplotlib.figure import Figure  # here, not at the top: the loop itself needs no plotting library

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A bare Figure, not pyplot: it renders with Agg, opens no window, and leaves the backend of a
    # notebook that imports this module alone.
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    if train_losses:
        ax.plot(*zip(*train_losses), lw=0.8, alpha=0.7, label="training batch")
    if heldout_losses:
        ax.plot(*zip(*heldout_losses), "o-", label="held out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# --- the training loop ---------------------------------------------------------------------------------

@dataclass
class _Process:
    """Where this process runs: its rank among ``world_size`` processes (1 without DDP) and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0  # only rank 0 writes files and shows progress


def train(config: TrainConfig, train_tokens: torch.Tensor | None = None,
          heldout_tokens: torch.Tensor | None = None, *, progress: bool = True) -> TrainResult:
    """Train the model ``config`` describes and return a :class:`TrainResult`.

    The tokens default to ``load_splits()``: Shakespeare minus three held-out works. Under ``torchrun``
    (the environment variable WORLD_SIZE > 1) every process runs this function; they train one model with
    DistributedDataParallel, each on its own batches. ``progress`` shows a tqdm bar with loss and tokens/s.

    A device this machine lacks, a DDP environment without its ranks and an unusable out_dir are refused
    before any work. Ctrl-C raises :class:`TrainingInterrupted`, whose message says which checkpoint stands
    (during the final evaluation the trained steps are saved first); a save that fails, e.g. on a full disk,
    raises :class:`SaveFailed` and leaves the last good checkpoint as it was.

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> config = TrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, batch_size=2, max_steps=2,
    ...                      out_dir=out, figure_path=f"{out}/loss.png")
    >>> result = train(config, torch.arange(200), torch.arange(100), progress=False)
    >>> sorted(path.name for path in result.checkpoint.iterdir())
    ['config.json', 'loss.png', 'model.safetensors', 'train_state.pt']
    """
    started = time.perf_counter()
    world_size, rank, local_rank = _distributed_env()  # before any slow work: bad settings fail at once
    if config.device != "auto":
        check_device("device", config.device)  # "cuda" on a CPU-only machine, "cuda:3" with one GPU …
    proc = None
    try:
        _prepare_out_dir(config, is_main=rank == 0)
        if train_tokens is None or heldout_tokens is None:
            train_tokens, heldout_tokens = load_splits()
        proc = _start_process(config.device, world_size, rank, local_rank)
        return _train(config, train_tokens, heldout_tokens, proc, progress, started)
    except KeyboardInterrupt:  # during start-up: _train turns one in any later phase into TrainingInterrupted
        raise TrainingInterrupted(_interrupted_at_start(config)) from None
    finally:
        if proc is not None and proc.world_size > 1:
            dist.destroy_process_group()


def _train(config: TrainConfig, train_tokens: torch.Tensor, heldout_tokens: torch.Tensor,
           proc: _Process, progress: bool, started: float) -> TrainResult:
    """The loop itself, for one process; `train` sets up and tears down the process group around it.

    A Ctrl-C from here on becomes a TrainingInterrupted that names what was kept; one during the set-up
    below reaches `train`, which reports it as before the first step."""
    vocab_size = config.model_config().vocab_size
    seen = SeenVocab.of(train_tokens, vocab_size) if config.seen_vocab_head else SeenVocab.everything(vocab_size)
    model, optimizer, generator, state = _setup(config, proc, seen)  # model: the compact one
    ddp_model = _wrap_ddp(model, proc) if proc.world_size > 1 else model
    train_ids = seen.compact_ids(train_tokens).to(proc.device)  # (N,) in the compact vocabulary
    state["tokens_per_second"] = 0.0
    state["saved_step"] = state["step"] if config.resume else None
    clock = _Clock(state["elapsed"], proc)
    bar = tqdm(total=None if config.time_budget else config.max_steps, initial=state["step"],
               disable=not (progress and proc.is_main), unit="step", dynamic_ncols=True)
    try:
        _loop(config, seen, model, ddp_model, optimizer, generator, state, train_ids, heldout_tokens, proc,
              clock, bar)
        full_model = seen.expand(model, config.model_config())  # the plain GPT-2-shaped model
    except KeyboardInterrupt:
        bar.close()
        raise TrainingInterrupted(_interrupted_message(config, state)) from None
    bar.close()
    try:
        final = _evaluate(full_model, heldout_tokens, config, state, proc, final=True)
    except KeyboardInterrupt:  # the steps since the last save are done: keep them before stopping
        state["elapsed"] = clock.read()
        raise TrainingInterrupted(_save_on_interrupt(config, seen, full_model, optimizer, generator, state,
                                                     proc)) from None
    figure = None
    try:
        state["elapsed"] = clock.read()
        checkpoint = _save(config, seen, full_model, optimizer, generator, state, proc)
        if proc.is_main:
            figure = plot_losses(state["train_losses"], state["heldout_losses"], config.figure_path,
                                 title=f"{Path(config.out_dir).name}: training and held-out loss")
    except KeyboardInterrupt:  # the save is atomic as a set: the message says which set stands
        raise TrainingInterrupted(_interrupted_message(config, state)) from None
    return TrainResult(
        steps=state["step"], final_heldout_loss=final, num_parameters=full_model.num_parameters(),
        tokens_per_second=state["tokens_per_second"], wall_time=time.perf_counter() - started,
        checkpoint=checkpoint, figure=figure, train_losses=state["train_losses"],
        heldout_losses=state["heldout_losses"], model=full_model.eval(),
    )


def _loop(config: TrainConfig, seen: SeenVocab, model: GPT, ddp_model: torch.nn.Module,
          optimizer: torch.optim.Optimizer, generator: torch.Generator, state: dict, train_ids: torch.Tensor,
          heldout_tokens: torch.Tensor, proc: _Process, clock: _Clock, bar: tqdm) -> None:
    """Train until max_steps or the time budget, evaluating and saving every eval_interval steps."""
    tokens_per_step = config.batch_size * config.block_size * proc.world_size  # all processes together
    first_step, step_time = state["step"], 0.0
    for step in range(first_step, config.max_steps):
        elapsed = clock.read() if config.time_budget else 0.0
        if config.time_budget and elapsed >= 60.0 * config.time_budget:
            break
        t0 = time.perf_counter()
        x, y = get_batch(train_ids, config.batch_size, config.block_size, generator)  # (B, T) each
        loss = _train_step(ddp_model, optimizer, seen, x, y, lr_at(step, config, elapsed), config.grad_clip)
        step_time += time.perf_counter() - t0  # loss is a Python float: the GPU has finished the step
        done = step + 1  # steps done so far, the x axis of every loss
        state["step"] = done
        state["train_losses"].append((done, loss))
        state["tokens_per_second"] = tokens_per_step * (done - first_step) / step_time
        bar.update()
        bar.set_postfix(loss=f"{loss:.3f}", tokens_per_s=f"{state['tokens_per_second']:,.0f}")
        if done % config.eval_interval == 0 and done < config.max_steps:  # the final one comes after
            full_model = seen.expand(model, config.model_config())
            _evaluate(full_model, heldout_tokens, config, state, proc)
            state["elapsed"] = clock.read()
            _save(config, seen, full_model, optimizer, generator, state, proc)


def _interrupted_message(config: TrainConfig, state: dict) -> str:
    """One line for Ctrl-C: where the last checkpoint is, and how to go on from it."""
    saved = state.get("saved_step")
    if saved is None:
        return f"interrupted at step {state['step']}, before the first checkpoint: nothing was saved"
    return (f"interrupted at step {state['step']}; the last checkpoint is {config.out_dir} (step {saved}): "
            "run the same command with --resume to continue from it")


def _interrupted_at_start(config: TrainConfig) -> str:
    """One line for Ctrl-C before the first step: nothing was trained, and what out_dir still holds."""
    if config.resume:
        return (f"interrupted while starting up, before the first step: nothing new was trained, and the "
                f"checkpoint in {config.out_dir} is kept: run the same command to resume from it")
    return "interrupted while starting up, before the first step: nothing was trained or saved"


def _save_on_interrupt(config: TrainConfig, seen: SeenVocab, full_model: GPT, optimizer: torch.optim.Optimizer,
                       generator: torch.Generator, state: dict, proc: _Process) -> str:
    """Ctrl-C during the final held-out evaluation: save the trained steps without that score, and say so.

    The evaluation is the slowest part of the end of a run (every held-out window), and the steps since the
    last save would be lost with it; a save takes a moment. A second Ctrl-C during it stops the save too,
    and the message then names the checkpoint that stands.
    """
    try:
        _save(config, seen, full_model, optimizer, generator, state, proc)
    except KeyboardInterrupt:
        return _interrupted_message(config, state)
    return (f"interrupted during the final held-out evaluation; the weights of step {state['step']} were saved to "
            f"{config.out_dir} without it: run the same command with --resume to score them")


def _setup(config: TrainConfig, proc: _Process, seen: SeenVocab
           ) -> tuple[GPT, torch.optim.AdamW, torch.Generator, dict]:
    """The compact model, its optimizer, the batch generator and the step/loss state: seeded, or restored."""
    # Same seed, same run. Under DDP each rank gets its own seed, so each draws different batches and
    # dropout masks; the ranks' initial weights differ too, but DDP copies rank 0's to all when it wraps.
    torch.manual_seed(config.seed + proc.rank)
    generator = torch.Generator().manual_seed(config.seed + proc.rank)  # batches only: resume restores it
    full_model = GPT(config.model_config())
    saved = _load_run(config, seen, proc) if config.resume else None
    if saved is not None:
        full_model = saved["model"]
    # training runs attention through SDPA (fused kernels); the saved model keeps the readable default
    model = seen.shrink(full_model, replace(config.model_config(), use_sdpa=True)).to(proc.device)
    optimizer = make_optimizer(model, config)
    state = _restore(saved, optimizer, generator, proc) if saved is not None else _fresh_state()
    return model, optimizer, generator, state


class _Clock:
    """Seconds a run has spent, earlier sessions of it included. Under DDP every process reads rank 0's
    clock, so under a time budget all of them stop after the same step."""

    def __init__(self, already: float, proc: _Process) -> None:
        self.start = time.perf_counter() - already
        self.proc = proc

    def read(self) -> float:
        seconds = time.perf_counter() - self.start
        if self.proc.world_size == 1:
            return seconds  # no device tensor, no sync: this runs every step under a time budget
        shared = torch.tensor([seconds], dtype=torch.float64, device=self.proc.device)
        dist.broadcast(shared, src=0)
        return shared.item()


def _wrap_ddp(model: GPT, proc: _Process) -> DDP:
    """Wrap for DDP: it copies rank 0's weights to every rank now, and averages gradients in backward()."""
    return DDP(model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seen: SeenVocab, x: torch.Tensor,
                y: torch.Tensor, lr: float, grad_clip: float) -> float:
    """One optimizer step on the batch (x, y), each (B, T) in the compact vocabulary; returns its loss."""
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    with _autocast(x.device):
        logits = model(x)  # (B, T, S + 1)
    # cross_entropy wants (N, V) scores and (N,) targets: fold batch and time together; fp32 for accuracy
    loss = seen.loss(logits.flatten(0, 1).float(), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # under DDP this also averages the gradients over all processes
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (about twice the speed, fp32 range so no loss scaling); plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _evaluate(model: GPT, tokens: torch.Tensor, config: TrainConfig, state: dict, proc: _Process,
              final: bool = False) -> float | None:
    """Held-out loss of the full ``model`` after the current step, recorded in state (on every window if
    ``final``, else on ``eval_windows``); rank 0 only (the others get None)."""
    if not proc.is_main:
        return None
    loss = heldout_loss(model, tokens, config.block_size, None if final else config.eval_windows)
    state["heldout_losses"].append((state["step"], loss))
    return loss


# --- saving and resuming -------------------------------------------------------------------------------
#
# A checkpoint is a set of files: the weights, their config.json and train_state.pt. A kill in the middle
# of writing them must never leave weights of one step beside the optimizer of another, so a save is
# atomic as a set: write everything into out_dir/.saving, fsync, rename that directory to out_dir/.saved
# (one atomic step: from here on the new set is complete), then move its files into place. A save killed
# before that rename leaves the old set untouched (.saving is thrown away); one killed after it is finished
# by the next resume. Every file records its step (config.json's "training_step", train_state.pt's "step"
# and its hashes of the other two), and resume refuses a set that disagrees.

WRITING, WRITTEN = ".saving", ".saved"  # out_dir's subdirectories while a save is under way
SAVED_SET = (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME)  # the files of one checkpoint


class TrainingInterrupted(Exception):
    """Ctrl-C stopped a run; the message says where its last checkpoint is and how to resume."""


class SaveFailed(OSError):
    """Writing a checkpoint failed (a full disk, most often); the message says which and what was kept.

    A save writes into out_dir/.saving and commits with one rename, so a failed one leaves the last good
    checkpoint exactly as it was; the unfinished set is deleted to give its space back.
    """


def _save_failed_message(config: TrainConfig, state: dict, error: Exception) -> str:
    """One sentence: which save failed, where, why, and which checkpoint out_dir still holds."""
    why = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else f"{error}"
    saved = state.get("saved_step")
    kept = (f"the last good checkpoint (step {saved}) is kept there: once the cause is fixed, run the same "
            "command with --resume to continue from it" if saved is not None else
            "no checkpoint of this run had been saved yet")
    return f"saving the checkpoint of step {state['step']} to {config.out_dir} failed ({why}); {kept}"


def _fresh_state() -> dict:
    return {"step": 0, "train_losses": [], "heldout_losses": [], "elapsed": 0.0}


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    """Every random state the next step depends on: the batch generator and torch's (dropout) RNGs."""
    state = {"batches": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save(config: TrainConfig, seen: SeenVocab, full_model: GPT, optimizer: torch.optim.Optimizer,
          generator: torch.Generator, state: dict, proc: _Process) -> Path | None:
    """Write the full model (the compact one expanded) and train_state.pt, which holds the compact model's
    optimizer, to out_dir as one set (rank 0 only); returns out_dir, or None on the other ranks."""
    rng = [_rng_state(generator, proc.device)]
    if proc.world_size > 1:  # every rank draws its own batches: keep all their states, listed by rank
        rng = [None] * proc.world_size
        dist.all_gather_object(rng, _rng_state(generator, proc.device))
    if not proc.is_main:
        return None
    out_dir = Path(config.out_dir)
    _finish_interrupted_save(out_dir)
    writing = out_dir / WRITING
    try:
        save_checkpoint(full_model, writing)  # fp32, so that a resumed run continues bit for bit
        config_path = writing / CONFIG_NAME
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "training_step": state["step"]},
                                          indent=2) + "\n")
        hashes = {name: _sha256(writing / name) for name in (WEIGHTS_NAME, CONFIG_NAME)}
        torch.save({**state, "optimizer": optimizer.state_dict(), "rng": rng, "config": vars(config),
                    "seen_ids": len(seen.ids), "sha256": hashes}, writing / STATE_NAME)
        for path in writing.iterdir():
            _fsync(path)
        _fsync(writing)
    except (OSError, RuntimeError, SafetensorError) as e:  # a full disk: torch.save says so as a RuntimeError
        shutil.rmtree(writing, ignore_errors=True)  # give back the space the unfinished set took
        raise SaveFailed(_save_failed_message(config, state, e)) from e
    os.replace(writing, out_dir / WRITTEN)  # the commit point: the new set is complete
    state["saved_step"] = state["step"]  # from here on a resume continues from this step
    _fsync(out_dir)
    _finish_interrupted_save(out_dir, check=False)  # the set just written and synced: no need to re-read it
    return out_dir


def _finish_interrupted_save(out_dir: Path, *, check: bool = True) -> None:
    """Complete a save that was killed after its commit point; throw away one killed before it.

    With ``check`` the set the moves would leave is verified first, every file as train_state.pt recorded it
    (see :func:`_check_interrupted_save`), so a damaged .saved never replaces a good checkpoint. ``_save``
    skips it only for the set it has just written and synced itself.
    """
    shutil.rmtree(out_dir / WRITING, ignore_errors=True)
    written = out_dir / WRITTEN
    if written.is_dir():
        if check:
            _check_interrupted_save(out_dir)
        for path in written.iterdir():
            os.replace(path, out_dir / path.name)
        _fsync(out_dir)
        written.rmdir()


def _check_interrupted_save(out_dir: Path) -> None:
    """Refuse, before a single file moves, a .saved set that would not leave one complete checkpoint.

    The set checked is what the moves would leave: each file from .saved, or from out_dir where a killed
    move already put it there. A file damaged in .saved (truncated, changed, from another save) is named,
    and the message says whether out_dir's own checkpoint is still untouched.
    """
    written = out_dir / WRITTEN
    files = {name: written / name if (written / name).exists() else out_dir / name for name in SAVED_SET}
    state, problem = _read_state(files[STATE_NAME])
    problem = problem or _set_problem(files, state)
    if problem is None:
        return
    moved = [name for name in SAVED_SET if files[name].parent == out_dir]
    kept = (f"nothing was moved, so the checkpoint in {out_dir} is as it was: delete {written} to resume "
            "from it" if not moved else
            f"{', '.join(moved)} had already been moved into {out_dir}, so it holds no complete checkpoint "
            "either: restore a complete copy, or start afresh with --overwrite (this deletes it)")
    raise ValueError(f"cannot resume from {out_dir}: {written} holds an interrupted save that is damaged "
                     f"({problem}); {kept}")


def _fsync(path: Path) -> None:
    """Make a file's (or a directory's list of names') contents durable before the next step relies on it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_run(config: TrainConfig, seen: SeenVocab, proc: _Process) -> dict:
    """The saved run in out_dir: its train_state.pt contents and its full model, checked to be one set."""
    out_dir = Path(config.out_dir)
    if proc.is_main:  # only rank 0 writes, so only it may finish an interrupted save
        _finish_interrupted_save(out_dir)
    if proc.world_size > 1:
        dist.barrier()
    path = out_dir / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"resume=True but {path} does not exist: nothing to resume")
    state, problem = _read_state(path)
    problem = problem or _set_problem({name: out_dir / name for name in SAVED_SET}, state)
    if problem is not None:
        raise ValueError(f"cannot resume from {out_dir}: {problem}. The files are not one complete checkpoint; "
                         f"restore a complete copy, or start afresh with --overwrite (this deletes it)")
    model = load_checkpoint(out_dir)
    for name in ("n_layer", "n_head", "n_embd", "block_size"):  # dropout may change between runs, shape not
        if getattr(model.config, name) != getattr(config, name):
            raise ValueError(f"resume: out_dir={config.out_dir!r} holds a model with {name}="
                             f"{getattr(model.config, name)}, but the config asks for {getattr(config, name)}")
    if state["config"].get("seen_vocab_head", True) != config.seen_vocab_head or state["seen_ids"] != len(seen.ids):
        raise ValueError(f"resume: the run in {config.out_dir!r} trained its head on {state['seen_ids']} ids "
                         f"(seen_vocab_head={state['config'].get('seen_vocab_head', True)}); this one would use "
                         f"{len(seen.ids)} (seen_vocab_head={config.seen_vocab_head}): resume with the same "
                         "training tokens and head")
    if len(state["rng"]) != proc.world_size:
        raise ValueError(f"the run in {config.out_dir!r} used {len(state['rng'])} processes; resume it with "
                         f"the same number, not {proc.world_size}")
    return {**state, "model": model}


def _read_state(path: Path) -> tuple[dict | None, str | None]:
    """train_state.pt's contents, or None and why it cannot serve as one (missing, unreadable, foreign)."""
    if not path.is_file():
        return None, f"{path} is missing"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # plain dicts, lists, numbers, tensors
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        return None, f"{path} cannot be read ({type(e).__name__}: {e})"
    hashes = state.get("sha256") if isinstance(state, dict) else None
    if not isinstance(hashes, dict) or set(hashes) != {WEIGHTS_NAME, CONFIG_NAME} or "step" not in state:
        return None, f"{path} is not a minigpt training state (no step and hashes of its files in it)"
    return state, None


def _set_problem(files: dict[str, Path], state: dict) -> str | None:
    """Why ``files`` (name -> path) are not all the files saved with ``state`` at its step; None if they are."""
    for name, expected in state["sha256"].items():
        path = files[name]
        if not path.is_file():
            return f"{path} is missing"
        if _sha256(path) != expected:
            return (f"{path} is not the file saved with {STATE_NAME} at step {state['step']} "
                    f"(it was changed, truncated or comes from another save)")
    try:
        config_step = json.loads(files[CONFIG_NAME].read_text()).get("training_step")
    except (ValueError, AttributeError) as e:  # not JSON, or JSON but not an object
        return f"{files[CONFIG_NAME]} is not a minigpt config ({e})"
    if config_step != state["step"]:
        return f"{files[CONFIG_NAME]} belongs to step {config_step}, {STATE_NAME} to step {state['step']}"
    return None


def _restore(saved: dict, optimizer: torch.optim.Optimizer, generator: torch.Generator, proc: _Process) -> dict:
    """Put the saved optimizer and RNG states back; returns the step, loss history and time spent."""
    optimizer.load_state_dict(saved["optimizer"])  # moves the moments to the parameters' device
    rng = saved["rng"][proc.rank]
    generator.set_state(rng["batches"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and proc.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], proc.device)
    return {k: saved.get(k, default) for k, default in _fresh_state().items()}


def _prepare_out_dir(config: TrainConfig, is_main: bool = True) -> None:
    """Check out_dir before the first step: a writable directory, holding no checkpoint unless the run
    resumes it or is told to overwrite it."""
    out_dir = check_writable_dir("out_dir", config.out_dir)
    saved = [name for name in (WEIGHTS_NAME, STATE_NAME, WRITTEN) if (out_dir / name).exists()]
    if saved and not config.resume:
        if not config.overwrite:
            raise ValueError(f"out_dir={config.out_dir!r} already holds a checkpoint ({', '.join(saved)}): "
                             "pass --resume to continue it, --overwrite to replace it, or another --out-dir")
        for name in (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME, WRITING, WRITTEN) if is_main else ():
            path = out_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


# --- processes and devices -----------------------------------------------------------------------------

def _distributed_env() -> tuple[int, int, int]:
    """WORLD_SIZE, RANK and LOCAL_RANK from the environment (torchrun sets all three); (1, 0, 0) without DDP.

    A launcher that sets WORLD_SIZE > 1 but not the ranks, or a value that is no integer in range, is named
    here, before any work, rather than failing as a KeyError inside the process group's set-up.
    """
    values = {}
    for name, low in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)):
        text = os.environ.get(name)
        if text is not None:
            values[name] = int(text) if text.strip().isdecimal() else -1
            if values[name] < low:
                raise ValueError(f"the environment variable {name} must be an integer >= {low}, got {text!r}")
    world_size = values.get("WORLD_SIZE", 1)
    if world_size == 1:
        return 1, 0, 0
    for name in ("RANK", "LOCAL_RANK"):
        if name not in values:
            raise ValueError(f"WORLD_SIZE={world_size} but the environment variable {name} is not set: start "
                             "DDP runs with torchrun, which sets WORLD_SIZE, RANK and LOCAL_RANK, or unset WORLD_SIZE")
    if values["RANK"] >= world_size:
        raise ValueError(f"the environment variable RANK must be below WORLD_SIZE={world_size}, "
                         f"got {values['RANK']}")
    return world_size, values["RANK"], values["LOCAL_RANK"]


def _start_process(device: str, world_size: int, rank: int, local_rank: int) -> _Process:
    """This process's rank and device; under torchrun (WORLD_SIZE > 1) also join the process group."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size == 1:
        return _Process(rank=0, world_size=1, device=torch.device(device))
    if torch.device(device).type == "cuda":
        dev = torch.device("cuda", local_rank)  # one GPU per process on each machine
        torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl", device_id=dev)
    else:
        dev = torch.device(device)
        dist.init_process_group(backend="gloo")  # gloo runs on CPU
    return _Process(rank=rank, world_size=world_size, device=dev)


# --- validation ----------------------------------------------------------------------------------------

def _check_range(config: TrainConfig, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {getattr(config, name)!r}")


def _check_device(device: str) -> None:
    try:
        if device != "auto":
            torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1', "
                         f"'mps'; got {device!r}") from e


# --- the command line ----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a ``--flag`` for every TrainConfig field, plus ``--config FILE.json`` and ``--no-progress``.

    Flags that are not given stay out of the namespace, so :func:`run` can tell "not given" (use the JSON
    file's value, else the default) from "given".

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> vars(parser.parse_args(["--n-layer", "4", "--no-resume"]))
    {'config': None, 'progress': True, 'n_layer': 4, 'resume': False}
    """
    parser.add_argument("--config", metavar="FILE.json",
                        help="JSON object of TrainConfig fields to use as defaults; flags override them")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar with loss and tokens/s (default: on)")
    add_dataclass_arguments(parser, TrainConfig, suppress=True)  # a flag per field, its help the field's doc


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed arguments: the defaults, overridden by ``--config`` JSON, overridden by flags.

    >>> config_from_args(argparse.Namespace(config=None, max_steps=10)).max_steps
    10
    """
    names = {f.name for f in fields(TrainConfig)}
    values = {}
    if getattr(args, "config", None):
        values = json.loads(Path(args.config).read_text())
        unknown = sorted(set(values) - names) if isinstance(values, dict) else None
        if unknown is None or unknown:
            raise ValueError(f"--config {args.config} must be a JSON object of TrainConfig fields "
                             f"({', '.join(sorted(names))}); unknown: {unknown}")
    return dataclass_from_args(TrainConfig, argparse.Namespace(**{**values, **vars(args)}))  # flags win


def run(args: argparse.Namespace) -> int:
    """Train with the parsed command-line arguments, print a summary, and return the exit status (0).

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--max-steps", "2000"]))  # doctest: +SKIP
    parameters: 12.4M
    ...
    """
    config = config_from_args(args)
    try:
        result = train(config, progress=args.progress)
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return 130  # the shell's code for "stopped by Ctrl-C"
    except SaveFailed as e:
        print(f"minigpt train: error: {e}", file=sys.stderr)
        return 1
    if result.checkpoint is not None:  # rank 0 only, so torchrun prints it once
        print(f"parameters: {result.num_parameters / 1e6:.1f}M")
        print(f"steps: {result.steps}, {result.tokens_per_second:,.0f} tokens/s")
        print(f"final held-out loss: {result.final_heldout_loss:.4f} nats/token")
        print(f"wall time: {result.wall_time:.1f} s")
        print(f"checkpoint: {result.checkpoint}")
        print(f"loss curve: {result.figure}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m minigpt.train [flags]``: what ``torchrun -m minigpt.train`` runs in every process.

    >>> main(["--max-steps", "2000"])  # doctest: +SKIP
    parameters: 12.4M
    ...
    """
    parser = argparse.ArgumentParser(prog="python -m minigpt.train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:  # a bad setting: say which, without a traceback
        parser.error(str(e))


if __name__ == "__main__":
    sys.exit(main())
