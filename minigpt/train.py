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
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.checks import check_int, check_real
from minigpt.data import get_batch, heldout_windows, load_splits
from minigpt.model import GPT, GPTConfig

STATE_NAME = "train_state.pt"  # optimizer, step, losses and RNG states, next to the checkpoint's files


def _field(default: object, help: str):
    """A dataclass field whose help text is both its comment here and its ``--flag``'s help in the CLI."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults train the ~12M-parameter Shakespeare model."""

    # --- the model; the vocabulary is always GPT-2's 50,257 tokens
    n_layer: int = _field(6, "transformer blocks")
    n_head: int = _field(6, "attention heads per block; must divide n_embd")
    n_embd: int = _field(192, "width of the residual stream")
    block_size: int = _field(256, "context length in tokens: the length of every training window")
    dropout: float = _field(0.2, "fraction of activations zeroed while training; fights overfitting")
    # --- the optimisation
    batch_size: int = _field(16, "windows per step (per process under DDP)")
    max_steps: int = _field(2000, "optimizer steps to train for, counted from the very first step")
    learning_rate: float = _field(1e-3, "peak learning rate, reached at the end of warmup")
    min_lr: float = _field(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _field(100, "steps of linear warmup from ~0 to learning_rate")
    lr_decay_steps: int | None = _field(
        None, "step at which the cosine decay reaches min_lr; none = max_steps. Set it to stop a run "
        "early and resume it later on the same schedule")
    weight_decay: float = _field(0.1, "AdamW weight decay, applied to 2-D parameters only")
    beta1: float = _field(0.9, "AdamW beta1: decay rate of the gradient's running mean")
    beta2: float = _field(0.99, "AdamW beta2: decay rate of the squared gradient's running mean")
    grad_clip: float = _field(1.0, "clip the gradient's global L2 norm to this; 0 = no clipping")
    # --- evaluation, reproducibility, where things go
    eval_interval: int = _field(250, "score held-out text and save a checkpoint every this many steps")
    eval_windows: int | None = _field(
        100, "held-out windows scored at each mid-training evaluation; none = all (the final one uses all)")
    seed: int = _field(1337, "seed for the initial weights, dropout and batches: same seed, same run")
    device: str = _field("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps …")
    out_dir: str = _field("out", "directory for the checkpoint and train_state.pt")
    resume: bool = _field(False, "continue the run saved in out_dir instead of starting afresh")
    figure_path: str = _field("figures/loss_curve.png", "where to write the loss curve (PNG)")

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

def lr_at(step: int, config: TrainConfig) -> float:
    """The learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine decay to min_lr.

    Warmup keeps the first updates small while Adam's moment estimates are still noise; the cosine decay
    lets the weights settle at the end.

    >>> config = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    >>> lr_at(0, config), lr_at(10, config), lr_at(60, config), lr_at(110, config)
    (0.0001, 0.001, 0.00055, 0.0001)
    """
    decay_steps = config.lr_decay_steps or config.max_steps
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if step >= decay_steps:
        return config.min_lr
    progress = (step - config.warmup_steps) / (decay_steps - config.warmup_steps)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_lr + coeff * (config.learning_rate - config.min_lr)


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
    # on CUDA the fused kernel updates every parameter in one launch; elsewhere torch picks the default
    return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.learning_rate,
                             betas=(config.beta1, config.beta2), fused=True if on_cuda else None)


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
                path: str | Path) -> Path:
    """Draw training and held-out loss against step and write it as a PNG to ``path``.

    >>> import tempfile
    >>> plot_losses([(1, 10.8), (2, 9.5)], [(2, 9.9)], Path(tempfile.mkdtemp()) / "loss.png").suffix
    '.png'
    """
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
    ax.set_title("Training and held-out loss")
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

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> config = TrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, batch_size=2, max_steps=2,
    ...                      out_dir=out, figure_path=f"{out}/loss.png")
    >>> result = train(config, torch.arange(200), torch.arange(100), progress=False)
    >>> sorted(path.name for path in result.checkpoint.iterdir())
    ['config.json', 'loss.png', 'model.safetensors', 'train_state.pt']
    """
    started = time.perf_counter()
    if train_tokens is None or heldout_tokens is None:
        train_tokens, heldout_tokens = load_splits()
    proc = _start_process(config.device)
    try:
        return _train(config, train_tokens, heldout_tokens, proc, progress, started)
    finally:
        if proc.world_size > 1:
            dist.destroy_process_group()


def _train(config: TrainConfig, train_tokens: torch.Tensor, heldout_tokens: torch.Tensor,
           proc: _Process, progress: bool, started: float) -> TrainResult:
    """The loop itself, for one process; `train` sets up and tears down the process group around it."""
    model, optimizer, generator, state = _setup(config, proc)
    ddp_model = _wrap_ddp(model, proc) if proc.world_size > 1 else model
    train_tokens = train_tokens.to(proc.device)
    tokens_per_step = config.batch_size * config.block_size * proc.world_size  # all processes together
    first_step, step_time, tokens_per_second = state["step"], 0.0, 0.0
    bar = tqdm(total=config.max_steps, initial=first_step, disable=not (progress and proc.is_main),
               unit="step", dynamic_ncols=True)
    for step in range(first_step, config.max_steps):
        t0 = time.perf_counter()
        x, y = get_batch(train_tokens, config.batch_size, config.block_size, generator)  # (B, T) each
        loss = _train_step(ddp_model, optimizer, x, y, lr_at(step, config), config.grad_clip)
        step_time += time.perf_counter() - t0  # loss is a Python float: the GPU has finished the step
        done = step + 1  # steps done so far, the x axis of every loss
        state["step"] = done
        state["train_losses"].append((done, loss))
        tokens_per_second = tokens_per_step * (done - first_step) / step_time
        bar.update()
        bar.set_postfix(loss=f"{loss:.3f}", tokens_per_s=f"{tokens_per_second:,.0f}")
        if done % config.eval_interval == 0 and done < config.max_steps:  # the final one comes below
            _evaluate(model, heldout_tokens, config.block_size, config.eval_windows, state, proc)
            _save(config, model, optimizer, generator, state, proc)
    bar.close()
    final = _evaluate(model, heldout_tokens, config.block_size, None, state, proc)
    checkpoint = _save(config, model, optimizer, generator, state, proc)
    figure = None
    if proc.is_main:
        figure = plot_losses(state["train_losses"], state["heldout_losses"], config.figure_path)
    return TrainResult(
        steps=state["step"], final_heldout_loss=final, num_parameters=model.num_parameters(),
        tokens_per_second=tokens_per_second, wall_time=time.perf_counter() - started,
        checkpoint=checkpoint, figure=figure, train_losses=state["train_losses"],
        heldout_losses=state["heldout_losses"], model=model.eval(),
    )


def _setup(config: TrainConfig, proc: _Process) -> tuple[GPT, torch.optim.AdamW, torch.Generator, dict]:
    """The model, its optimizer, the batch generator and the step/loss state: seeded, or restored."""
    # Same seed, same run. Under DDP each rank gets its own seed, so each draws different batches and
    # dropout masks; the ranks' initial weights differ too, but DDP copies rank 0's to all when it wraps.
    torch.manual_seed(config.seed + proc.rank)
    generator = torch.Generator().manual_seed(config.seed + proc.rank)  # batches only: resume restores it
    model = GPT(config.model_config()).to(proc.device)
    optimizer = make_optimizer(model, config)
    state = _resume(config, model, optimizer, generator, proc) if config.resume else _fresh_state()
    return model, optimizer, generator, state


def _wrap_ddp(model: GPT, proc: _Process) -> DDP:
    """Wrap for DDP: it copies rank 0's weights to every rank now, and averages gradients in backward()."""
    return DDP(model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                lr: float, grad_clip: float) -> float:
    """One optimizer step on the batch (x, y), each (B, T); returns the batch's mean loss."""
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    with _autocast(x.device):
        logits = model(x)  # (B, T, V)
    # cross_entropy wants (N, V) scores and (N,) targets: fold batch and time together; fp32 for accuracy
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
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


def _evaluate(model: GPT, tokens: torch.Tensor, block_size: int, max_windows: int | None, state: dict,
              proc: _Process) -> float | None:
    """Held-out loss after the current step, recorded in state; rank 0 only (the others get None)."""
    if not proc.is_main:
        return None
    loss = heldout_loss(model, tokens, block_size, max_windows)
    state["heldout_losses"].append((state["step"], loss))
    return loss


# --- saving and resuming -------------------------------------------------------------------------------

def _fresh_state() -> dict:
    return {"step": 0, "train_losses": [], "heldout_losses": []}


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    """Every random state the next step depends on: the batch generator and torch's (dropout) RNGs."""
    state = {"batches": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save(config: TrainConfig, model: GPT, optimizer: torch.optim.Optimizer, generator: torch.Generator,
          state: dict, proc: _Process) -> Path | None:
    """Write the weights and train_state.pt to out_dir (rank 0 only); returns out_dir, or None on others."""
    rng = [_rng_state(generator, proc.device)]
    if proc.world_size > 1:  # every rank draws its own batches: keep all their states, listed by rank
        rng = [None] * proc.world_size
        dist.all_gather_object(rng, _rng_state(generator, proc.device))
    if not proc.is_main:
        return None
    out_dir = save_checkpoint(model, config.out_dir)  # fp32, so a resumed run continues bit for bit
    torch.save({**state, "optimizer": optimizer.state_dict(), "rng": rng, "config": vars(config)},
               out_dir / STATE_NAME)
    return out_dir


def _resume(config: TrainConfig, model: GPT, optimizer: torch.optim.Optimizer, generator: torch.Generator,
            proc: _Process) -> dict:
    """Load the weights, optimizer and RNG states saved in out_dir; returns step and loss history."""
    path = Path(config.out_dir) / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"resume=True but {path} does not exist: nothing to resume")
    saved = load_checkpoint(config.out_dir)
    for name in ("n_layer", "n_head", "n_embd", "block_size"):  # dropout may change between runs, shape not
        if getattr(saved.config, name) != getattr(config, name):
            raise ValueError(f"resume: out_dir={config.out_dir!r} holds a model with {name}="
                             f"{getattr(saved.config, name)}, but the config asks for {getattr(config, name)}")
    model.load_state_dict(saved.state_dict())
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain dicts, lists, numbers, tensors
    if len(state["rng"]) != proc.world_size:
        raise ValueError(f"the run in {config.out_dir!r} used {len(state['rng'])} processes; resume it with "
                         f"the same number, not {proc.world_size}")
    optimizer.load_state_dict(state.pop("optimizer"))  # moves the moments to the parameters' device
    rng = state.pop("rng")[proc.rank]
    generator.set_state(rng["batches"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and proc.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], proc.device)
    return {k: state[k] for k in _fresh_state()}


# --- processes and devices -----------------------------------------------------------------------------

def _start_process(device: str) -> _Process:
    """This process's rank and device; under torchrun (WORLD_SIZE > 1) also join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size == 1:
        return _Process(rank=0, world_size=1, device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
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

def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


_ARG_TYPES = {"int": int, "float": float, "str": str, "int | None": _int_or_none}


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
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help = f"{f.metadata['help']} (default: {f.default})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help)
        else:
            parser.add_argument(flag, type=_ARG_TYPES[f.type], default=argparse.SUPPRESS, help=help,
                                metavar=f.name.upper())


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
    values.update({name: value for name, value in vars(args).items() if name in names})
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    """Train with the parsed command-line arguments, print a summary, and return the exit status (0).

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--max-steps", "2000"]))  # doctest: +SKIP
    parameters: 12.4M
    ...
    """
    config = config_from_args(args)
    result = train(config, progress=args.progress)
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
