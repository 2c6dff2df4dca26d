"""``minigpt bench``: how fast does the model decode, and how close is that to what the memory allows?

One process measures, side by side on the same weights, for each dtype and batch size:

- ``no-cache``: ``generate(..., use_cache=False)``, which recomputes the whole sequence every step;
- ``cache``: ``generate(...)``, the readable loop with the KV cache;
- ``fast``: ``minigpt.fast.FastDecoder``, the fast path;
- ``transformers``: Hugging Face's ``generate`` on a ``GPT2LMHeadModel`` holding the same weights, when
  transformers is installed (else skipped, with a note).

Each dtype is fp32, bf16 or int8. With int8, ``fast`` is ``FastDecoder(weights="int8")`` (minigpt's
per-channel int8, ``minigpt.quantize``) and the other methods run torch's ``quantize_dynamic`` on the same
fp32 weights, the peer a user would try first; ``int8_quality`` then measures what int8 costs on a trained
model (held-out loss, greedy tokens against fp32).

Every run is greedy with EOS off, so each method makes exactly the tokens asked for. For each it reports
the time to first token (prefill + one token), decode tokens/s, the peak memory of the run, and the
decode speed as a fraction of the *bandwidth bound*: a decode step must read every weight and the KV
cache at least once, so it cannot take less than (bytes read) / (memory bandwidth), which
``measure_bandwidth`` measures on the spot, before and after the decode runs, keeping the faster (see
``bandwidth_bound``). Each of its readings lasts ``BANDWIDTH_SECONDS``, about as long as a decode run, so
that a burst of speed too short for any run to use does not raise the bound.

    minigpt bench                  # GPT-2 124M shape, random weights, CPU: batch 1 and 8, fp32 and int8
    minigpt bench --batch-sizes 1 --dtypes fp32 --new-tokens 64 --repeats 1   # a quick look
    minigpt bench --methods no-cache cache fast transformers --dtypes fp32 bf16 int8 --batch-sizes 1 8 32
    minigpt bench --device cuda --no-cache-max-batch 32
    minigpt bench --suites speculative beam --speculative-k 2 4 --num-beams 2 4

Two more suites answer the search chapters' speed questions, on the same device:

- ``speculative``: the shipped ``shakespeare`` target with the ``shakespeare-draft`` draft (real models, so
  the acceptance rate means something): tokens/s of the target alone, of speculative decoding for each
  draft length k and of prompt-lookup decoding, greedy and sampled; the speed-up over the target alone,
  the acceptance rate, and target passes per token;
- ``beam``: beam search on the benchmark model (batch 1, fp32) for each beam width, against greedy:
  tokens/s of the returned sequence and the *cost per beam*, (time with b beams / greedy's time) / b, below
  1 when running the beams as one batch is cheaper than b separate greedy runs; and transformers' beam
  search on the same weights, with its tokens compared.

Results: tables on screen (a progress bar on stderr while it runs), a JSON file and a PNG plot.

>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> config = BenchConfig(preset="tiny", batch_sizes=(1,), new_tokens=3, dtypes=("fp32",), repeats=1,
...                      methods=("cache", "fast"), suites=("decode",), out_json=f"{out}/b.json",
...                      figure=f"{out}/b.png")
>>> report = run_bench(config, progress=False)
>>> sorted({r["method"] for r in report["results"]})
['cache', 'fast']
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogFormatter, NullLocator
from tqdm import tqdm

from minigpt.checkpoint import CONV1D_SUFFIXES, load_model
from minigpt.checks import check_choice, check_int
from minigpt.data import load_splits
from minigpt.fast import FastDecoder
from minigpt.generate import PAD_TOKEN_ID, generate, stream
from minigpt.model import GPT, PRESETS, GPTConfig
from minigpt.fast.native import available as native_available
from minigpt.fast.native import matvec as native_matvec
from minigpt.fast.native import unavailable_reason
from minigpt.quantize import quantize_model
from minigpt.search import beam_search
from minigpt.speculative import SpeculativeOutput, prompt_lookup_generate, speculative_generate
from minigpt.tokenizer import encode
from minigpt.train import heldout_loss

METHODS = ("no-cache", "cache", "fast", "transformers")
SUITES = ("decode", "speculative", "beam")
# prompts for the speculative suite: Shakespeare, the text the shipped target and draft were trained on
SPECULATIVE_PROMPTS = (
    "ROMEO:\nBut soft, what light",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "To be, or not to be, that is the question:",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}  # int8: fp32 model, int8 matrices
QUALITY_WINDOWS = 16  # int8 quality: held-out windows scored (of the model's context each)
QUALITY_NEW_TOKENS = 64  # int8 quality: greedy tokens per prompt compared with fp32's


def _field(default, help: str):
    """A dataclass field whose help text is both its comment here and its ``--flag``'s help in the CLI."""
    return field(default=default, metadata={"help": help})


@dataclass
class BenchConfig:
    """What to measure. The defaults take about 3 minutes on 2 CPU cores: GPT-2 124M shape, 16-token prompt, 128
    new tokens, batch 1 and 8, fp32 and int8, 2 runs each."""

    preset: str = _field("gpt2", f"model shape, random weights (speed does not depend on them): {', '.join(PRESETS)}")
    batch_sizes: tuple[int, ...] = _field((1, 8), "batch sizes to measure; every row is a random prompt of "
                                                  "prompt_len tokens")
    prompt_len: int = _field(16, "prompt length in tokens")
    new_tokens: int = _field(128, "tokens generated per row (greedy, EOS off); at least 2")
    dtypes: tuple[str, ...] = _field(("fp32", "int8"), "fp32, bf16 and/or int8 (weights; CPU only, with its "
                                                       "quality measured on the target model); bf16 is skipped "
                                                       "where the device has no fast bf16 (CPUs without "
                                                       "AVX512-BF16/AMX)")
    device: str = _field("cpu", "cpu, cuda, cuda:1 …")
    repeats: int = _field(2, "runs of each measurement; decode: the methods take turns and each keeps its "
                             "fastest run; speculative and beam: the median")
    methods: tuple[str, ...] = _field(("cache", "fast", "transformers"), f"what to measure: {', '.join(METHODS)}")
    no_cache_max_batch: int = _field(1, "largest batch size the no-cache method runs at: recomputing grows "
                                        "with the square of the length; at batch 32 on 2 CPU cores, over an hour")
    compile: bool | None = _field(None, "torch.compile the fast path's decode step; default: on CUDA only "
                                        "(CUDA graphs), since on CPU it bought nothing measurable")
    suites: tuple[str, ...] = _field(("decode",), "what to measure: decode (the methods above at each batch "
                                                  "size and dtype), speculative (draft-and-verify), beam (cost "
                                                  "per beam)")
    target: str = _field("shakespeare", "speculative suite: the target model; int8: the model whose quality "
                                        "is measured; a shipped name or a path")
    draft: str = _field("shakespeare-draft", "speculative suite: the draft model, a shipped name or a path")
    speculative_k: tuple[int, ...] = _field((2, 4, 8), "speculative suite: draft lengths k to measure")
    num_beams: tuple[int, ...] = _field((2, 4, 8), "beam suite: beam widths to measure against greedy")
    seed: int = _field(0, "seed for the random weights, prompts and sampling")
    out_json: str = _field("figures/bench.json", "where to write the results (JSON)")
    figure: str = _field("figures/bench.png", "where to write the plot (PNG)")

    def __post_init__(self) -> None:
        self.dtypes, self.methods, self.suites = tuple(self.dtypes), tuple(self.methods), tuple(self.suites)
        check_choice("preset", self.preset, PRESETS)
        for name, low in (("prompt_len", 1), ("new_tokens", 2), ("repeats", 1), ("no_cache_max_batch", 1), ("seed", 0)):
            check_int(name, getattr(self, name), low)
        for name in ("batch_sizes", "speculative_k", "num_beams"):
            setattr(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty list of integers >= 1, got ()")
            for value in getattr(self, name):
                check_int(name, value, 1)
        for name, allowed in (("dtypes", DTYPES), ("methods", METHODS), ("suites", SUITES)):
            if not getattr(self, name):
                raise ValueError(f"{name} must name at least one of {', '.join(allowed)}, got ()")
            for value in getattr(self, name):
                check_choice(name, value, allowed)
        if self.compile not in (None, True, False):
            raise ValueError(f"compile must be True, False or None (auto), got {self.compile!r}")
        block_size = self.model_config().block_size
        if self.prompt_len + self.new_tokens > block_size:
            raise ValueError(f"prompt_len + new_tokens must be <= {block_size} (the {self.preset} context), "
                             f"got {self.prompt_len} + {self.new_tokens}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device must be a torch device such as 'cpu', 'cuda', 'cuda:1'; "
                             f"got {self.device!r}") from e

    def model_config(self) -> GPTConfig:
        return GPTConfig.from_preset(self.preset)


# --- what the machine allows ------------------------------------------------------------------------

def measure_bandwidth(
    device: str | torch.device = "cpu", nbytes: int = 2**30, repeats: int = 5, seconds: float = 0.0
) -> float:
    """Memory *read* bandwidth in GB/s: the fastest of ``repeats`` timed reads of ``nbytes`` of fp32.

    Several reads are timed, because no single kernel reaches the memory's speed on every CPU: a sum
    (reads each number once, one number out) and a matrix-vector product over the same bytes seen as a
    (rows, 1024) matrix, which is exactly what a batch-1 decode step does to every weight matrix, by
    torch, and on CPU by the fast path's C step too (``minigpt.fast.native.matvec``, where it builds). On a
    2-core Xeon the sum read 19-23 GB/s and the products 28; elsewhere the sum won; with torch's
    portable kernels (no vector instructions) torch's reads made 15 GB/s where the C step's read 25, and a
    bound from torch's alone would have had the C step beating memory. The tensor (1 GiB by
    default) is larger than any CPU's last-level cache (that Xeon's is 300 MiB, and 256 MiB read 20% faster
    than 1 GiB there), so the bytes really come from DRAM (or HBM on a GPU). The best run is kept: the
    others were slowed by something else, not by the memory. So the bound computed from it is one no
    method should beat. ``nbytes`` is rounded down to whole rows of 1024 numbers (4096 bytes).

    With ``seconds`` > 0, each timed read streams the tensor over and over for at least that long, with
    whichever of the kernels read fastest. A reading should last about as long as the runs it bounds:
    on a shared machine whose memory speed swings, a 50 ms read can catch a fast moment that no
    4-second decode run ever sees (on that Xeon, over the same 30 s: 32.2 GB/s for the best 50 ms read,
    24.6 for the best 4-second stretch). ``minigpt bench`` reads for ``BANDWIDTH_SECONDS``.

    >>> measure_bandwidth("cpu", nbytes=2**22, repeats=1) > 0
    True
    """
    device = torch.device(device)
    if nbytes < 4096:
        raise ValueError(f"nbytes must be at least 4096 (one row of 1024 fp32 numbers), got {nbytes}")
    x = torch.ones(nbytes // 4096 * 1024, device=device)
    fastest = {}
    for read in read_kernels(x).values():
        read()  # warm-up: first touch of the pages, kernel selection
        fastest[read] = max(_read_rate(read, x.nbytes, 0.0, device) for _ in range(repeats))
    if seconds <= 0:
        return max(fastest.values())
    read = max(fastest, key=fastest.get)
    return max(_read_rate(read, x.nbytes, seconds, device) for _ in range(repeats))


def read_kernels(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The read-only kernels ``measure_bandwidth`` times, by name: each reads all of ``x`` once per call.

    ``x`` is a 1-D fp32 tensor of whole rows of 1024 numbers: ``"torch sum"`` sums it; ``"torch mv"``
    multiplies it, seen as a (rows, 1024) matrix, by a vector, as a batch-1 decode step does each weight
    matrix stored (out, in); ``"torch vm"`` multiplies a vector by it seen as a (1024, rows) matrix, the
    (in, out) layout that transformers' GPT-2 and the fast path's ``blas-in-out`` kernel read; and on CPU,
    where the C step builds, ``"C step matvec"`` is ``"torch mv"`` with the C step's own kernel
    (``minigpt.fast.native.matvec``).

    >>> reads = read_kernels(torch.ones(4096))
    >>> list(reads)[:2], float(reads["torch sum"]())
    (['torch sum', 'torch mv'], 4096.0)
    """
    matrix, vector = x.view(-1, 1024), torch.ones(1024, device=x.device)
    reads = {"torch sum": x.sum, "torch mv": lambda: torch.mv(matrix, vector),
             "torch vm": lambda: vector @ x.view(1024, -1)}
    if x.device.type == "cpu" and native_available():
        reads["C step matvec"] = lambda: native_matvec(matrix, vector)
    return reads


def _read_rate(read: Callable[[], object], nbytes: int, seconds: float, device: torch.device) -> float:
    """GB/s of ``read`` (which reads ``nbytes``), called again and again for at least ``seconds`` (once if 0)."""
    _sync(device)
    start, count = time.perf_counter(), 0
    while True:
        read()
        _sync(device)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * nbytes / elapsed / 1e9


# how long each of the bench's bandwidth readings lasts: about as long as one decode run at the default
# settings (128 tokens at batch 1 took 3.5-5 s on a 2-core Xeon), and no longer, so the bound stays generous
BANDWIDTH_SECONDS = 3.0
WEIGHT_FORMATS = {"fp32": 4, "bf16": 2, "int8": 1}  # bytes per number of a weight matrix


def weight_count(config: GPTConfig) -> int:
    """How many weights one decode step reads: every block, the final norm and the (tied) output head.

    Per block, with C = n_embd: the four matrices (QKV 3C×C, attention output C×C, MLP up 4C×C, MLP down
    C×4C: 12·C² numbers), their biases (9·C) and the two layer norms (4·C). Then the final norm (2·C) and
    the head (vocab × C), which is the token table read whole (the lookup reads one row of it). The
    position table is left out: a step reads one row.

    >>> weight_count(GPTConfig())  # GPT-2 124M: 124.4M parameters, less the 786k of the position table
    123653376
    """
    C = config.n_embd
    return config.n_layer * (12 * C * C + 13 * C) + 2 * C + config.vocab_size * C


def decode_step_bytes(config: GPTConfig, batch_size: int = 1, context_len: int = 0, *, weights: str = "fp32",
                      cache_bytes_per_number: int | None = None) -> int:
    """Bytes one decode step must read: every weight once (the whole batch shares them) and the KV cache.

    ``weights`` is the weights' format (``WEIGHT_FORMATS``): fp32 4 bytes a number, bf16 2, int8 1 for the
    matrices plus one fp32 scale per output channel, with biases and norms kept in fp32. The cache holds a
    key and a value of n_embd numbers per layer for each of the ``context_len`` positions of every row, in
    ``cache_bytes_per_number`` (default: bf16's 2 for bf16 weights, else fp32's 4)::

        bytes = weight bytes + 2 · n_layer · batch_size · context_len · n_embd · cache bytes per number

    >>> decode_step_bytes(GPTConfig()) / 1e6  # GPT-2 124M, fp32, empty cache: 495 MB a token
    494.613504
    >>> round(decode_step_bytes(GPTConfig(), weights="int8") / 1e6, 1)  # a quarter, plus the scales
    124.6
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    for name, value in (("batch_size", batch_size), ("context_len", context_len)):
        check_int(name, value, 1 if name == "batch_size" else 0)
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    matrices = L * 12 * C * C + V * C
    if weights == "int8":
        scales = L * 9 * C + V  # one per output channel of every matrix, the head's included
        weight_total = matrices + 4 * (scales + weight_count(config) - matrices)
    else:
        weight_total = WEIGHT_FORMATS[weights] * weight_count(config)
    if cache_bytes_per_number is None:
        cache_bytes_per_number = 2 if weights == "bf16" else 4
    check_int("cache_bytes_per_number", cache_bytes_per_number, 1)
    return weight_total + 2 * L * batch_size * context_len * C * cache_bytes_per_number


def bandwidth_bound(model: GPT, batch_size: int, prompt_len: int, new_tokens: int, bandwidth_gb_s: float,
                    *, weights: str | None = None) -> float:
    """The most decode tokens/s memory bandwidth allows, for a batch of ``batch_size`` sequences.

    One decode step makes one token per sequence and reads ``decode_step_bytes``: every weight once and
    each sequence's cached keys and values, with L the average context over the decode steps,
    prompt_len + new_tokens / 2::

        bound (tokens/s) = B · bandwidth / (bytes per step)

    ``weights`` is the format the weights are read in (default: the model's dtype, fp32 or bf16; "int8"
    for an int8 decoder of an fp32 model). The fraction a method reaches is its tokens/s divided by this
    bound (a no-cache run reads far more, so it sits far below).

    >>> round(bandwidth_bound(GPT(GPTConfig()), 1, 16, 256, bandwidth_gb_s=24.0), 1)
    47.5
    """
    if weights is None:
        weights = "bf16" if model.transformer.wte.weight.dtype == torch.bfloat16 else "fp32"
    avg_len = prompt_len + new_tokens // 2
    step = decode_step_bytes(model.config, batch_size, avg_len, weights=weights,
                             cache_bytes_per_number=model.transformer.wte.weight.element_size())
    return batch_size * bandwidth_gb_s * 1e9 / step


# --- peak memory ------------------------------------------------------------------------------------

class PeakMemory:
    """Context manager: ``.mb`` is the peak memory in use during the block *above* what was in use before.

    So it is what the generation itself needed (KV cache, activations, logits, temporaries), the weights
    excluded, and methods compare fairly however many models the process holds. CUDA: from
    ``torch.cuda.max_memory_allocated`` (tensors only, not the allocator's slack). CPU on Linux: the
    process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset on entry by
    writing ``5`` to ``/proc/self/clear_refs`` after glibc's ``malloc_trim`` has handed freed memory
    back; it counts every allocation, torch's or not, to the page. Elsewhere ``.mb`` is None.

    >>> with PeakMemory("cpu") as peak:
    ...     x = torch.ones(2**22)
    >>> peak.mb is None or peak.mb >= 0
    True
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            self._before = _reset_rss_peak()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._before) / 2**20
        elif self._before is not None:
            self.mb = max(0.0, (_proc_status_kb("VmHWM") - self._before) / 1024)


def _reset_rss_peak() -> int | None:
    """Reset the high-water mark to the current resident set; return that size in kB (None: unsupported)."""
    # glibc keeps freed memory resident for reuse, which would hide the run's own allocations (the
    # warm-up's freed cache would be reused unseen); malloc_trim hands it back to the system first
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_kb("VmRSS")
    except (OSError, ValueError):
        return None


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise ValueError(f"{key} not in /proc/self/status")


# --- the methods ------------------------------------------------------------------------------------

Runner = Callable[[int], torch.Tensor]  # new tokens -> ids (B, T + new)


def _runner(method: str, model: GPT, hf_model, ids: torch.Tensor, config: BenchConfig, dtype: str = "fp32") -> Runner:
    """A function that generates n new tokens for the prompt ``ids`` with ``method``; EOS off, greedy.

    With ``dtype="int8"``, ``model`` is the fp32 model for the fast path (it quantizes its own copy) and
    the ``quantize_dynamic`` one for the readable loop.
    """
    mask = torch.ones_like(ids)
    if method in ("no-cache", "cache"):
        use_cache = method == "cache"
        return lambda n: generate(model, ids, attention_mask=mask, max_new_tokens=n, use_cache=use_cache).ids
    if method == "fast":
        device = torch.device(config.device)
        compile = device.type == "cuda" if config.compile is None and dtype != "int8" else bool(config.compile)
        weights = "int8" if dtype == "int8" else "float"
        decoder = FastDecoder(model, ids.size(0), ids.size(1) + config.new_tokens, compile=compile, weights=weights)
        return lambda n: decoder.generate(ids, mask, max_new_tokens=n)

    return lambda n: transformers_generate(hf_model, ids, n)


def transformers_generate(hf_model, ids: torch.Tensor, n: int, num_beams: int = 1, **kwargs) -> torch.Tensor:
    """transformers' ``generate`` for exactly ``n`` new tokens after the unpadded ``ids``: greedy or beams, EOS off.

    With beams it returns the best sequence of each prompt; length_penalty 1 and early_stopping False are
    transformers' defaults and ``beam_search``'s, spelled out so both sides search the same way. Other
    ``kwargs`` go to ``generate`` (``assistant_model`` for assisted generation).
    """
    with torch.inference_mode():
        return hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, num_beams=num_beams, length_penalty=1.0, early_stopping=False,
                                 eos_token_id=None, pad_token_id=PAD_TOKEN_ID, **kwargs)


def to_transformers(model: GPT):
    """A transformers ``GPT2LMHeadModel`` with ``model``'s weights and dtype, or None without transformers.

    >>> hf = to_transformers(GPT(GPTConfig.from_preset("tiny")))
    >>> hf is None or type(hf).__name__ == "GPT2LMHeadModel"
    True
    """
    try:
        import transformers
    except ImportError:
        return None
    transformers.logging.set_verbosity_error()  # no "Setting pad_token_id" chatter over the progress bar
    c = model.config
    hf_config = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                                        n_layer=c.n_layer, n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                        attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    # minigpt's names are transformers' (the Conv1D matrices transposed); the tied head follows wte
    state = {name: t.t() if name.endswith(CONV1D_SUFFIXES) else t
             for name, t in model.state_dict().items() if name != "lm_head.weight"}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # the head is tied to wte, so it may be missing
        raise ValueError(f"weights do not map onto transformers' GPT-2: missing {missing}, unexpected {unexpected}")
    p = model.transformer.wte.weight
    return hf.to(device=p.device, dtype=p.dtype)


def bf16_supported(device: str | torch.device) -> bool:
    """Does ``device`` run bf16 matmuls natively (CUDA: Ampere or newer; CPU: AVX512-BF16 or AMX)?

    >>> isinstance(bf16_supported("cpu"), bool)
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # oneDNN's own check
        return torch.backends.mkldnn.is_available() and supported()
    return False


# --- timing -----------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run: Runner, n: int, device: torch.device) -> tuple[float, torch.Tensor]:
    _sync(device)
    start = time.perf_counter()
    ids = run(n)
    _sync(device)
    return time.perf_counter() - start, ids


def measure(runs: dict[str, Runner], batch_size: int, new_tokens: int, repeats: int, device: torch.device, *,
            between: Callable[[], object] | None = None) -> dict:
    """Time to first token, decode tokens/s and peak memory of each method in ``runs`` (name -> Runner), by name.

    Time to first token is a whole 1-token generation (prefill + first pick). Decode speed comes from the
    difference: (time of N tokens − time of 1) covers the N − 1 decode steps, so tokens/s is
    B · (N − 1) / that difference, free of the prefill and of any fixed setup cost.

    The methods take turns, one run each per round for ``repeats`` rounds, and each keeps its fastest
    run, as ``measure_bandwidth`` keeps its fastest reading. On a shared machine the memory's speed swings
    from minute to minute (±30% on a 2-core cloud VM): taking turns lets a slow spell slow every method
    alike, and a slower run was slowed by something else, not by the method (the advice of Python's
    ``timeit``). Peak memory is the largest of the runs.

    Each row also holds ``decode_runs``: the decode tokens/s of each round, its N-token run less the
    fastest 1-token run (less the round's own, a slow spell during that short run would make the round
    look faster than it was), so that their spread can be shown (``minigpt.metrics.spread``); the
    fastest of them is ``decode_tokens_per_s``. ``between``, when given, is called before every method's
    turn in every round: something else measured there (a bandwidth reading, say) takes its turns right
    beside the methods' runs and sees the same spells of the machine.

    >>> run = lambda n: torch.zeros(1, 4 + n)
    >>> rows = measure({"zeros": run}, 1, 3, 2, torch.device("cpu"))
    >>> rows["zeros"]["ids"].shape, len(rows["zeros"]["decode_runs"])
    (torch.Size([1, 7]), 2)
    """
    for run in runs.values():
        run(2)  # warm-up: kernel selection, allocator, torch.compile's compilation
    first, full, peaks = ({name: [] for name in runs} for _ in range(3))
    ids = {}  # each method's tokens, from its last run
    for _ in range(repeats):
        for name, run in runs.items():
            if between is not None:
                between()
            first[name].append(_timed(run, 1, device)[0])
            with PeakMemory(device) as peak:
                seconds, out = _timed(run, new_tokens, device)
            full[name].append(seconds)
            peaks[name].append(peak.mb)
            ids[name] = out
    rows = {}
    for name in runs:
        ttft, total = min(first[name]), min(full[name])
        rows[name] = dict(
            ttft_ms=1000 * ttft,
            decode_tokens_per_s=batch_size * (new_tokens - 1) / max(total - ttft, 1e-9),
            total_s=total,
            peak_memory_mb=None if None in peaks[name] else max(peaks[name]),
            ids=ids[name],
            decode_runs=[batch_size * (new_tokens - 1) / max(f - ttft, 1e-9) for f in full[name]],
        )
    return rows


def step_times(model: GPT, prompt: str, new_tokens: int, use_cache: bool = True) -> list[float]:
    """Seconds each token took to appear when streaming ``prompt``'s continuation (the first includes prefill).

    With the cache the steps stay flat; without it each one recomputes the whole sequence and they grow
    with its length. The KV-cache chapter plots both.

    >>> times = step_times(GPT(GPTConfig.from_preset("tiny")), "Hello", new_tokens=3)
    >>> len(times)
    3
    """
    times, start = [], time.perf_counter()
    for _ in stream(model, prompt, max_new_tokens=new_tokens, use_cache=use_cache):
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times


@dataclass
class CacheSpeedup:
    """``cache_speedup``'s answer: both wall times, their ratio, and whether the tokens were the same."""

    cache_s: float
    no_cache_s: float
    speedup: float
    identical: bool


def cache_speedup(model: GPT, ids: torch.Tensor, new_tokens: int = 512, *, fast: bool = False) -> CacheSpeedup:
    """How much faster greedy decoding of ``new_tokens`` is with the KV cache than recomputing, same tokens?

    The cached run is the readable loop, or with ``fast=True`` the fast path (``FastDecoder``); the other
    run is ``generate(..., use_cache=False)``. ``ids`` is a (B, T) prompt without padding.

    >>> result = cache_speedup(GPT(GPTConfig.from_preset("tiny")), torch.tensor([[15496]]), new_tokens=4)
    >>> result.identical
    True
    """
    device = model.transformer.wte.weight.device
    ids = ids.to(device)
    decoder = FastDecoder(model, ids.size(0), ids.size(1) + new_tokens) if fast else None

    def cached(n: int) -> torch.Tensor:
        return decoder.generate(ids, max_new_tokens=n) if decoder else generate(model, ids, max_new_tokens=n).ids

    cache_s, with_cache = _timed(cached, new_tokens, device)
    no_cache_s, without = _timed(lambda n: generate(model, ids, max_new_tokens=n, use_cache=False).ids,
                                 new_tokens, device)
    return CacheSpeedup(cache_s, no_cache_s, no_cache_s / cache_s, torch.equal(with_cache, without))


# --- int8 quality --------------------------------------------------------------------------------

def int8_quality(config: BenchConfig) -> list[dict]:
    """What int8 weights cost on a trained model (``config.target``), for minigpt's int8 and torch's peer.

    For each int8 method (``fast``: ``FastDecoder(weights="int8")``; ``cache``: ``quantize_dynamic`` on
    the readable model; ``transformers``: ``quantize_dynamic`` on transformers' GPT-2, when installed and
    asked for): the held-out loss (nats/token, ``QUALITY_WINDOWS`` windows of the held-out plays) with
    fp32 and with int8 weights; the share of greedy tokens that equal fp32's (``QUALITY_NEW_TOKENS`` after
    each ``SPECULATIVE_PROMPTS`` prompt, position by position, each run free: once the two part ways, the
    contexts differ and so do most later tokens); and the share of those steps where, given fp32's tokens
    so far, int8 picks fp32's token (same context: how often int8 alone changes a pick). The fast path's
    loss and same-context picks are those of ``quantize_model`` with the decoder's kernel: the same
    arithmetic, as its tests check.
    """
    model = load_model(config.target).eval()
    _, heldout = load_splits()
    n = _room_after_prompts(QUALITY_NEW_TOKENS, model.config.block_size)
    fp32_fast = FastDecoder(model, 1, model.config.block_size)
    int8_fast = FastDecoder(model, 1, model.config.block_size, weights="int8")
    variants = {"fast": (model, quantize_model(model, kernel=int8_fast.int8_kernel),
                         lambda ids: fp32_fast.generate(ids, max_new_tokens=n),
                         lambda ids: int8_fast.generate(ids, max_new_tokens=n)),
                "cache": _readable_pair(model, n)}
    if "transformers" in config.methods and _transformers_version() is not None:
        variants["transformers"] = _transformers_pair(model, n)
    rows = []
    for method, (fp32, int8, decode_fp32, decode_int8) in variants.items():
        losses = [heldout_loss(m, heldout, model.config.block_size, max_windows=QUALITY_WINDOWS) for m in (fp32, int8)]
        matches = same_context = total = 0
        for prompt in SPECULATIVE_PROMPTS:
            ids = torch.tensor([encode(prompt)])
            T = ids.size(1)
            reference, free = decode_fp32(ids), decode_int8(ids)  # (1, T + n) each
            with torch.inference_mode():
                picks = int8(reference[:, :-1])[0, T - 1 :].argmax(dim=-1)  # int8's pick after fp32's tokens
            matches += int((reference[0, T:] == free[0, T:]).sum())
            same_context += int((reference[0, T:] == picks).sum())
            total += n
        kernel = f"int8 {int8_fast.int8_kernel}" if method == "fast" else "quantize_dynamic"
        rows.append(dict(method=method, scheme=kernel, heldout_loss_fp32=losses[0], heldout_loss_int8=losses[1],
                         loss_change=losses[1] - losses[0], greedy_match=matches / total,
                         same_context_match=same_context / total))
    return rows


def _room_after_prompts(wanted: int, context: int) -> int:
    """New tokens to make after each of ``SPECULATIVE_PROMPTS``: ``wanted``, or what the context leaves."""
    return min(wanted, context - max(len(encode(p)) for p in SPECULATIVE_PROMPTS))


def _readable_pair(model: GPT, n: int) -> tuple:
    """(fp32 model, its quantize_dynamic copy, and greedy decoders of n tokens for each)."""
    int8 = quantize_dynamic(model)
    return (model, int8, lambda ids: generate(model, ids, max_new_tokens=n).ids,
            lambda ids: generate(int8, ids, max_new_tokens=n).ids)


def _transformers_pair(model: GPT, n: int) -> tuple:
    """The same for transformers' GPT-2 holding ``model``'s weights; the models return plain logits."""
    hf = to_transformers(model)
    int8 = quantize_dynamic(hf)
    return (_LogitsOnly(hf), _LogitsOnly(int8), lambda ids: transformers_generate(hf, ids, n),
            lambda ids: transformers_generate(int8, ids, n))


class _LogitsOnly(torch.nn.Module):
    """A transformers model that returns its logits tensor, as a minigpt model does (for ``heldout_loss``)."""

    def __init__(self, hf_model: torch.nn.Module) -> None:
        super().__init__()
        self.hf_model = hf_model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf_model(ids).logits


# --- speculative decoding and beam search ----------------------------------------------------------

def _median_time(run: Callable[[int], object], n: int, repeats: int, device: torch.device) -> tuple[float, object]:
    """Median seconds of ``run(n)`` over ``repeats`` calls after a short warm-up, and its last result."""
    run(2)  # warm-up: kernel selection, allocator
    times, out = [], None
    for _ in range(repeats):
        seconds, out = _timed(run, n, device)
        times.append(seconds)
    return statistics.median(times), out


def _speculative_suite(config: BenchConfig, progress: bool) -> list[dict]:
    """The target alone, speculative decoding at each k, and prompt lookup, greedy then sampled.

    Each measurement decodes every prompt of ``SPECULATIVE_PROMPTS`` in turn, EOS off, sampling seeded
    with ``config.seed``; the speed-up is against the target alone in the same mode. With transformers
    (installed, and named in ``methods``), greedy also runs transformers' target alone and its assisted
    generation (its speculative decoding) with a constant k, on the same weights; their speed-up is
    against transformers' target alone.
    """
    device = torch.device(config.device)
    target, draft = load_model(config.target, device=device), load_model(config.draft, device=device)
    context = min(target.config.block_size, draft.config.block_size)
    n = _room_after_prompts(config.new_tokens, context)
    methods = [("target alone", None), *(("speculative", k) for k in config.speculative_k), ("prompt lookup", None)]
    plan = [(mode, method, k) for mode in ("greedy", "sample") for method, k in methods]
    hf = (to_transformers(target), to_transformers(draft)) if "transformers" in config.methods else (None, None)
    if hf[0] is not None:
        plan += [("greedy", "transformers alone", None),
                 *(("greedy", "transformers assisted", k) for k in config.speculative_k)]
    rows, baseline, reference = [], {}, None
    for mode, method, k in tqdm(plan, desc="bench speculative", file=sys.stderr, disable=not progress, unit="run"):
        sampling = dict(do_sample=True, seed=config.seed) if mode == "sample" else {}
        run = _speculative_runner(method, target, draft, hf, k, sampling)
        seconds, outputs = _median_time(run, n, config.repeats, device)
        library = "transformers" if method.startswith("transformers") else "minigpt"
        if method.endswith("alone"):
            baseline[mode, library] = seconds
        tokens = [out.new_tokens for out in outputs]
        if (mode, method) == ("greedy", "target alone"):
            reference = tokens  # what every greedy method must reproduce
        proposed, accepted, passes = (_total(outputs, field) for field in _Decoded._fields[1:])
        rows.append(dict(method=method, mode=mode, k=k, new_tokens=n, tokens_per_s=len(outputs) * n / seconds,
                         speedup=baseline[mode, library] / seconds,
                         acceptance_rate=None if proposed is None else accepted / max(proposed, 1),
                         target_passes_per_token=None if passes is None else passes / (len(outputs) * n),
                         same_tokens_as_target=tokens == reference if mode == "greedy" else None))
    return rows


class _Decoded(NamedTuple):
    """One prompt's continuation and its draft-and-verify counts (None where a method has no such count)."""

    new_tokens: list[int]
    num_proposed: int | None = None
    num_accepted: int | None = None
    num_target_passes: int | None = None


def _total(outputs: list[_Decoded], field: str) -> int | None:
    counts = [getattr(out, field) for out in outputs]
    return None if None in counts else sum(counts)


def _speculative_runner(
    method: str, target: GPT, draft: GPT, hf: tuple, k: int | None, sampling: dict
) -> Callable[[int], list[_Decoded]]:
    """A function that decodes n new tokens for each of ``SPECULATIVE_PROMPTS`` with ``method``."""
    def counted(out: SpeculativeOutput) -> _Decoded:
        return _Decoded(out.new_tokens, out.num_proposed, out.num_accepted, out.num_target_passes)

    if method == "target alone":  # one pass of the target per token
        return lambda n: [_Decoded(generate(target, p, max_new_tokens=n, **sampling).new_tokens[0], None, None, n)
                          for p in SPECULATIVE_PROMPTS]
    if method == "speculative":
        return lambda n: [counted(speculative_generate(target, draft, p, k=k, max_new_tokens=n, **sampling))
                          for p in SPECULATIVE_PROMPTS]
    if method == "prompt lookup":
        return lambda n: [counted(prompt_lookup_generate(target, p, max_new_tokens=n, **sampling))
                          for p in SPECULATIVE_PROMPTS]
    hf_target, hf_draft = hf
    if method == "transformers assisted":
        hf_draft.generation_config.num_assistant_tokens = k
        hf_draft.generation_config.num_assistant_tokens_schedule = "constant"  # k every round, as ours
    assistant = dict(assistant_model=hf_draft) if method == "transformers assisted" else {}
    prompts = [torch.tensor([encode(p)], device=target.transformer.wte.weight.device) for p in SPECULATIVE_PROMPTS]
    return lambda n: [_Decoded(transformers_generate(hf_target, ids, n, **assistant)[0, ids.size(1):].tolist())
                      for ids in prompts]


def _beam_suite(config: BenchConfig, model: GPT, progress: bool) -> list[dict]:
    """Greedy and beam search at each width on the benchmark model, and transformers' on the same weights.

    Batch 1, fp32, EOS off. With no EOS every beam runs to ``new_tokens``, so each step costs one forward
    pass over ``num_beams`` rows; the cost per beam, (beam time / greedy time) / num_beams, shows how much
    batching the beams saves. transformers runs when it is installed and ``methods`` names it.
    """
    device = torch.device(config.device)
    ids, n = _prompt(1, config, device), config.new_tokens
    hf = to_transformers(model) if "transformers" in config.methods else None
    widths = (1, *config.num_beams)
    bar = tqdm(total=len(widths) * (1 + (hf is not None)), desc="bench beam", file=sys.stderr,
               disable=not progress, unit="run")

    def timed(run: Callable[[int], torch.Tensor]) -> tuple[float, torch.Tensor]:
        bar.update()
        return _median_time(run, n, config.repeats, device)

    measured = []  # (beams, seconds, best ids, transformers' seconds, transformers' best ids)
    for b in widths:
        seconds, best = timed(lambda new, b=b: _best_sequence(model, ids, b, new))
        hf_seconds, hf_best = (None, None) if hf is None else timed(
            lambda new, b=b: transformers_generate(hf, ids, new, num_beams=b))
        measured.append((b, seconds, best, hf_seconds, hf_best))
    greedy_s = measured[0][1]
    rows = [dict(method="greedy" if b == 1 else "beam", num_beams=b, new_tokens=n, tokens_per_s=n / seconds,
                 relative_to_greedy=greedy_s / seconds, cost_per_beam=seconds / greedy_s / b,
                 transformers_tokens_per_s=None if hf_seconds is None else n / hf_seconds,
                 same_tokens_as_transformers=None if hf_best is None else torch.equal(best.cpu(), hf_best.cpu()))
            for b, seconds, best, hf_seconds, hf_best in measured]
    bar.close()
    return rows


def _best_sequence(model: GPT, ids: torch.Tensor, num_beams: int, n: int) -> torch.Tensor:
    """Greedy decoding (one beam) or the best beam: the (1, T + n) ids."""
    if num_beams == 1:
        return generate(model, ids, max_new_tokens=n).ids
    return beam_search(model, ids, num_beams=num_beams, max_new_tokens=n).sequences[:1]


# --- the benchmark ----------------------------------------------------------------------------------

def _plan(config: BenchConfig, has_transformers: bool) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The (dtype, batch size, method) measurements to make, and a note for each one skipped."""
    notes, dtypes = [], []
    for d in config.dtypes:
        if d == "bf16" and not bf16_supported(config.device):
            notes.append(f"bf16 skipped: {config.device} has no native bf16 matmul")
        elif d == "int8" and torch.device(config.device).type != "cpu":
            notes.append(f"int8 skipped: its kernels run on CPU only, not on {config.device}")
        else:
            dtypes.append(d)
    methods = list(config.methods)
    if "transformers" in methods and not has_transformers:
        methods.remove("transformers")
        notes.append("transformers skipped: not installed (pip install 'minigpt[dev]')")
    big = [b for b in config.batch_sizes if b > config.no_cache_max_batch]
    if "no-cache" in methods and big:
        notes.append(f"no-cache skipped at batch sizes {big}: above no_cache_max_batch={config.no_cache_max_batch}")
    if "fast" in methods and torch.device(config.device).type == "cpu":
        why_not = unavailable_reason()
        notes.append("fast decodes with the C step (minigpt.fast.native), compiled for this CPU's "
                     f"{torch.backends.cpu.get_cpu_capability()}" if why_not is None
                     else f"fast decodes with torch's step: the C step cannot run here ({why_not})")
    if "fast" in methods:
        notes.append("peak MB is what a run allocates above what was in use before it; the fast path's KV "
                     "cache is allocated once, when its decoder is built, so its figure leaves the cache out")
    if "int8" in dtypes:
        notes.append("int8: fast is FastDecoder(weights='int8'), minigpt's own per-channel int8; cache, no-cache and "
                     "transformers are torch's quantize_dynamic on the same fp32 weights (transformers' GPT-2 "
                     "blocks are Conv1D, which it leaves alone: only its head is int8); int8 bounds count 1 byte "
                     "per matrix weight")
    plan = [(d, b, m) for d in dtypes for b in config.batch_sizes for m in methods
            if not (m == "no-cache" and b > config.no_cache_max_batch)]
    return plan, notes


def run_bench(config: BenchConfig, *, progress: bool = True) -> dict:
    """Measure everything ``config`` asks for; write the JSON and the PNG; return the report (a dict).

    The report holds ``config``, ``machine`` (device name, torch and transformers versions, threads),
    ``bandwidth_gb_s``, ``weight_bytes`` (per dtype, ``decode_step_bytes``), ``results`` (the decode suite:
    one dict per dtype × batch size × method), ``int8_quality`` (with int8: ``int8_quality``'s rows),
    ``speculative`` and ``beam`` (one dict per measured setting; empty when the suite was not asked for)
    and ``notes`` (what was skipped and why). The plot shows the decode suite, when it ran.
    """
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    base = GPT(config.model_config()).eval().to(device)
    bandwidth = measure_bandwidth(device, repeats=2, seconds=BANDWIDTH_SECONDS)
    results, notes = _decode_suite(config, base, progress) if "decode" in config.suites else ([], [])
    if results:  # measured again after the decode suite, the faster kept: a slow spell must not lower the bound
        bandwidth = max(bandwidth, measure_bandwidth(device, repeats=2, seconds=BANDWIDTH_SECONDS))
        _add_bounds(results, config, base, bandwidth)
    int8 = "decode" in config.suites and "int8" in config.dtypes and torch.device(config.device).type == "cpu"
    quality = int8_quality(config) if int8 else []
    speculative = _speculative_suite(config, progress) if "speculative" in config.suites else []
    beam = _beam_suite(config, base, progress) if "beam" in config.suites else []
    report = dict(config=asdict(config), machine=_machine(device), bandwidth_gb_s=bandwidth,
                  weight_bytes={d: decode_step_bytes(base.config, weights=d) for d in config.dtypes},
                  results=results, int8_quality=quality, speculative=speculative, beam=beam, notes=notes)
    _write_json(report, config.out_json)
    if results:
        plot_results(report, config.figure)
    return report


def _decode_suite(config: BenchConfig, base: GPT, progress: bool) -> tuple[list[dict], list[str]]:
    """Every method × dtype × batch size of the plan: the rows of ``results``, and the notes.

    Everything measured at one batch size, every method in every dtype, takes turns (``measure``): a slow
    spell of the machine then slows fp32 and int8 alike, so int8 ÷ fp32 compares runs made side by side.
    So every dtype's models stay alive for the whole suite: for GPT-2 124M with fp32 and int8, 0.6 GB more
    at the peak than one dtype at a time (transformers' fp32 copy, kept beside the int8 models).
    """
    device = torch.device(config.device)
    plan, notes = _plan(config, _transformers_version() is not None)
    groups: dict[int, list[tuple[str, str]]] = {}
    for dtype, batch, method in plan:
        groups.setdefault(batch, []).append((dtype, method))
    dtypes = dict.fromkeys(dtype for dtype, _, _ in plan)  # in the plan's order
    models = {dtype: _models(base, dtype, "transformers" in config.methods) for dtype in dtypes}
    rows = {}
    bar = tqdm(groups.items(), desc="bench decode", file=sys.stderr, disable=not progress, unit="batch size")
    for batch, measurements in bar:
        bar.set_postfix_str(f"batch {batch}: {len(measurements)} methods × dtypes")
        ids = _prompt(batch, config, device)
        names = {f"{method} {dtype}": (dtype, method) for dtype, method in measurements}
        runs = {name: _runner(method, base if dtype == "int8" else models[dtype][0], models[dtype][1], ids, config,
                              dtype) for name, (dtype, method) in names.items()}
        measured = measure(runs, batch, config.new_tokens, config.repeats, device)
        del runs  # the fast paths' copies of the weights
        rows |= {(dtype, batch, method): measured[name] for name, (dtype, method) in names.items()}
    results = [dict(method=method, dtype=dtype, batch_size=batch, **rows[dtype, batch, method])
               for dtype, batch, method in plan]
    _mark_identical(results)
    return results, notes


def _add_bounds(results: list[dict], config: BenchConfig, base: GPT, bandwidth: float) -> None:
    """Set each row's ``bound_tokens_per_s`` (``bandwidth_bound``) and ``bound_fraction`` (its share of it)."""
    for r in results:
        bound = bandwidth_bound(base, r["batch_size"], config.prompt_len, config.new_tokens, bandwidth,
                                weights=r["dtype"])
        r.update(bound_tokens_per_s=bound, bound_fraction=r["decode_tokens_per_s"] / bound)


def _models(base: GPT, dtype: str, with_transformers: bool) -> tuple:
    """The readable model and transformers' (or None) for ``dtype``; int8: both through ``quantize_dynamic``."""
    if dtype == "int8":
        hf = to_transformers(base) if with_transformers else None
        return quantize_dynamic(base), None if hf is None else quantize_dynamic(hf)
    model = base if dtype == "fp32" else copy.deepcopy(base).to(DTYPES[dtype])
    return model, to_transformers(model) if with_transformers else None


def quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` through torch's ``quantize_dynamic``: the int8 peer a user would try first.

    Every ``nn.Linear`` becomes a dynamically quantized one (int8 weights with one scale per matrix, int8
    activations quantized on the fly, fbgemm's kernels). transformers' GPT-2 builds its blocks from
    ``Conv1D``, which it does not touch: only that model's output head is quantized.

    >>> type(quantize_dynamic(GPT(GPTConfig.from_preset("tiny"))).lm_head)
    <class 'torch.ao.nn.quantized.dynamic.modules.linear.Linear'>
    """
    with warnings.catch_warnings():  # torch's deprecation notice for its quantized tensors, at every call
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def _prompt(batch: int, config: BenchConfig, device: torch.device) -> torch.Tensor:
    """Random prompt ids, the same for every method at a batch size (so their tokens can be compared)."""
    rng = torch.Generator().manual_seed(config.seed + batch)
    return torch.randint(0, config.model_config().vocab_size, (batch, config.prompt_len), generator=rng).to(device)


def _mark_identical(results: list[dict]) -> None:
    """Set ``same_tokens_as_cache`` on each row (None where the cache row is missing); drop the ids."""
    # int8 rows are two different quantizations: their agreement with fp32 is int8_quality's job
    cache = {(r["dtype"], r["batch_size"]): r["ids"] for r in results
             if r["method"] == "cache" and r["dtype"] != "int8"}
    for r in results:
        ref = cache.get((r["dtype"], r["batch_size"]))
        r["same_tokens_as_cache"] = None if ref is None else torch.equal(r["ids"].cpu(), ref.cpu())
    for r in results:
        del r["ids"]


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def _machine(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return dict(device=str(device), name=name, torch=torch.__version__, transformers=_transformers_version(),
                threads=torch.get_num_threads())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def format_table(report: dict) -> str:
    """The results as plain-text tables (decode, then speculative and beam when measured), the bandwidth, the notes.

    >>> row = dict(method="cache", dtype="fp32", batch_size=1, ttft_ms=12.0, decode_tokens_per_s=20.0,
    ...            bound_fraction=0.4, peak_memory_mb=3.5, same_tokens_as_cache=True)
    >>> print(format_table(dict(results=[row], bandwidth_gb_s=24.0, notes=[])))
    method        dtype  batch  first token ms  decode tok/s  of bound  peak MB  same tokens
    cache         fp32       1            12.0          20.0       40%      3.5  yes
    memory read bandwidth: 24.0 GB/s
    """
    lines = _decode_table(report["results"]) if report["results"] else []
    if report.get("int8_quality"):
        lines += _quality_table(report["int8_quality"], report["config"])
    if report.get("speculative"):
        lines += _speculative_table(report["speculative"], report["config"])
    if report.get("beam"):
        lines += _beam_table(report["beam"])
    lines.append(f"memory read bandwidth: {report['bandwidth_gb_s']:.1f} GB/s")
    return "\n".join(lines + [f"note: {n}" for n in report["notes"]])


YES_NO = {True: "yes", False: "NO", None: "-"}


def _decode_table(results: list[dict]) -> list[str]:
    lines = [f"{'method':<13} {'dtype':<5} {'batch':>6} {'first token ms':>15} {'decode tok/s':>13} "
             f"{'of bound':>9} {'peak MB':>8}  same tokens"]
    for r in results:
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.1f}"
        lines.append(f"{r['method']:<13} {r['dtype']:<5} {r['batch_size']:>6} {r['ttft_ms']:>15.1f} "
                     f"{r['decode_tokens_per_s']:>13.1f} {r['bound_fraction']:>9.0%} {peak:>8}  "
                     f"{YES_NO[r['same_tokens_as_cache']]}")
    return lines


def _quality_table(rows: list[dict], config: dict) -> list[str]:
    """Rows of ``int8_quality``: each int8 method's held-out loss against fp32's and its greedy agreement."""
    lines = ["", f"int8 quality on {config['target']}: held-out loss (nats/token, {QUALITY_WINDOWS} windows); greedy "
                 f"tokens equal to fp32's ({len(SPECULATIVE_PROMPTS)} prompts, {QUALITY_NEW_TOKENS} tokens each), run "
                 "free and given fp32's tokens so far",
             f"{'method':<13} {'int8 scheme':<17} {'fp32 loss':>9} {'int8 loss':>9} {'change':>7} {'greedy match':>13} "
             f"{'same context':>13}"]
    for r in rows:
        lines.append(f"{r['method']:<13} {r['scheme']:<17} {r['heldout_loss_fp32']:>9.3f} "
                     f"{r['heldout_loss_int8']:>9.3f} {r['loss_change']:>+7.3f} {r['greedy_match']:>13.1%} "
                     f"{r['same_context_match']:>13.1%}")
    return lines


def _speculative_table(rows: list[dict], config: dict) -> list[str]:
    """Rows of the speculative suite, under a heading that names both models."""
    lines = ["", f"speculative decoding: target {config['target']}, draft {config['draft']}, "
                 f"{rows[0]['new_tokens']} new tokens for each of {len(SPECULATIVE_PROMPTS)} prompts",
             f"{'method':<21} {'mode':<6} {'k':>3} {'tokens/s':>9} {'speed-up':>9} {'accepted':>9} "
             f"{'target passes/token':>20}  same tokens"]
    for r in rows:
        k = "-" if r["k"] is None else r["k"]
        accepted = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.1%}"
        passes = "-" if r["target_passes_per_token"] is None else f"{r['target_passes_per_token']:.2f}"
        lines.append(f"{r['method']:<21} {r['mode']:<6} {k:>3} {r['tokens_per_s']:>9.1f} {r['speedup']:>8.2f}x "
                     f"{accepted:>9} {passes:>20}  {YES_NO[r['same_tokens_as_target']]}")
    return lines


def _beam_table(rows: list[dict]) -> list[str]:
    """Rows of the beam suite: greedy first, then each beam width."""
    lines = ["", f"beam search: batch 1, fp32, {rows[0]['new_tokens']} new tokens, EOS off",
             f"{'method':<7} {'beams':>5} {'tokens/s':>9} {'vs greedy':>10} {'cost per beam':>14} "
             f"{'transformers tok/s':>19} {'vs transformers':>16}  same tokens"]
    for r in rows:
        hf = r["transformers_tokens_per_s"]
        hf_speed, ratio = ("-", "-") if hf is None else (f"{hf:.1f}", f"{r['tokens_per_s'] / hf:.2f}x")
        lines.append(f"{r['method']:<7} {r['num_beams']:>5} {r['tokens_per_s']:>9.1f} "
                     f"{r['relative_to_greedy']:>9.2f}x {r['cost_per_beam']:>13.2f}x {hf_speed:>19} {ratio:>16}  "
                     f"{YES_NO[r['same_tokens_as_transformers']]}")
    return lines


def plot_results(report: dict, path: str | Path) -> Path:
    """Decode tokens/s and time to first token of every method and dtype, with the bandwidth bounds.

    With several batch sizes: one line per method and dtype against batch size (log axes where the values
    span more than a factor of 10). With one: bars, and each dtype's bound as a horizontal line. Written as
    a PNG to ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 4.5))  # a bare Figure renders with Agg and leaves pyplot's state alone
    speed, first = fig.subplots(1, 2)
    rows = report["results"]
    if len({r["batch_size"] for r in rows}) == 1:
        _plot_bars(speed, first, rows)
    else:
        _plot_lines(speed, first, rows)
    c = report["config"]
    fig.suptitle(f"{c['preset']} on {report.get('machine', {}).get('name', c['device'])}: "
                 f"{c['prompt_len']}-token prompt, {c['new_tokens']} new tokens, greedy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


COLOURS = {m: f"C{i}" for i, m in enumerate(METHODS)}  # a colour per method
LINE_STYLES = {"fp32": "-", "bf16": "--", "int8": ":"}  # a line style per dtype (bars: a hatch)
HATCHES = {"fp32": "", "bf16": "//", "int8": ".."}


def _plot_bars(speed, first, rows: list[dict]) -> None:
    """One batch size: a bar per method and dtype; each dtype's bound a dashed line across the speed panel."""
    labels = [f"{r['method']}\n{r['dtype']}" for r in rows]
    for ax, key, ylabel in ((speed, "decode_tokens_per_s", "decode tokens/s (all rows)"),
                            (first, "ttft_ms", "time to first token (ms)")):
        ax.bar(labels, [r[key] for r in rows], color=[COLOURS[r["method"]] for r in rows],
               hatch=[HATCHES[r["dtype"]] for r in rows], edgecolor="white")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelsize=8)
    bounds = {r["dtype"]: r["bound_tokens_per_s"] for r in rows}
    for dtype, bound in bounds.items():
        speed.axhline(bound, color="k", ls=LINE_STYLES[dtype], lw=1, alpha=0.6,
                      label=f"bandwidth bound {dtype}: {bound:.0f} tokens/s")
    speed.set_ylim(0, 1.1 * max([*bounds.values(), *(r["decode_tokens_per_s"] for r in rows)]))
    speed.legend(fontsize=8, loc="upper left")
    speed.set_title(f"batch size {rows[0]['batch_size']}", fontsize=10)


def _plot_lines(speed, first, rows: list[dict]) -> None:
    """Several batch sizes: a line per method and dtype against batch size; the bounds in thin black."""
    series, bounds = {}, {}
    for r in rows:
        series.setdefault((r["method"], r["dtype"]), []).append(r)
        bounds.setdefault(r["dtype"], {})[r["batch_size"]] = r["bound_tokens_per_s"]
    for (method, dtype), group in series.items():
        batches = [r["batch_size"] for r in group]
        kw = dict(color=COLOURS[method], ls=LINE_STYLES[dtype], marker="o", label=f"{method} {dtype}")
        speed.plot(batches, [r["decode_tokens_per_s"] for r in group], **kw)
        first.plot(batches, [r["ttft_ms"] for r in group], **kw)
    for dtype, by_batch in bounds.items():
        batches = sorted(by_batch)
        speed.plot(batches, [by_batch[b] for b in batches], color="k", ls=LINE_STYLES[dtype], lw=1, alpha=0.5,
                   label=f"bandwidth bound {dtype}")
    for ax, key, ylabel in ((speed, "decode_tokens_per_s", "decode tokens/s (all rows)"),
                            (first, "ttft_ms", "time to first token (ms)")):
        values = [r[key] for r in rows] + ([b for d in bounds.values() for b in d.values()] if ax is speed else [])
        ax.set_xscale("log", base=2)
        if max(values) > 10 * min(values):  # a log axis only where the values span a decade or more
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # labels only when few decades
        else:
            ax.set_ylim(0, 1.1 * max(values))
        ax.set_xticks(sorted({r["batch_size"] for r in rows}))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 2000, not 2 x 10^3
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    speed.legend(fontsize=8)


# --- the command line ---------------------------------------------------------------------------------

def _bool_or_none(text: str) -> bool | None:
    return {"true": True, "on": True, "false": False, "off": False, "auto": None}[text.lower()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a ``--flag`` for every BenchConfig field, plus ``--no-progress``.

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> vars(parser.parse_args(["--batch-sizes", "1", "16", "--dtypes", "fp32"]))
    {'progress': True, 'batch_sizes': [1, 16], 'dtypes': ['fp32']}
    """
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar on stderr (default: on)")
    for f in fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        help = f"{f.metadata['help']} (default: {_show(f.default)})"
        kwargs = dict(default=argparse.SUPPRESS, help=help, metavar=f.name.upper())
        if f.type == "tuple[int, ...]":
            parser.add_argument(flag, type=int, nargs="+", **kwargs)
        elif f.type == "tuple[str, ...]":
            choices = list({"dtypes": DTYPES, "methods": METHODS, "suites": SUITES}[f.name])
            parser.add_argument(flag, nargs="+", choices=choices, **{**kwargs, "metavar": None})
        elif f.type == "bool | None":
            parser.add_argument(flag, type=_bool_or_none, **{**kwargs, "metavar": "on|off|auto"})
        else:
            parser.add_argument(flag, type={"int": int, "str": str}[f.type], **kwargs)


def _show(default: object) -> str:
    if isinstance(default, tuple):
        return " ".join(map(str, default))
    return "auto" if default is None else str(default)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with the parsed arguments, print the table and where the files went; return 0.

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--batch-sizes", "1", "--dtypes", "fp32"]))  # doctest: +SKIP
    method        dtype  batch  first token ms  decode tok/s  of bound  peak MB  same tokens
    ...
    """
    names = {f.name for f in fields(BenchConfig)}
    config = BenchConfig(**{k: v for k, v in vars(args).items() if k in names})
    report = run_bench(config, progress=args.progress)
    print(format_table(report))
    print(f"results: {config.out_json}")
    if report["results"]:
        print(f"plot: {config.figure}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m minigpt.bench [flags]``, the same as ``minigpt bench``."""
    parser = argparse.ArgumentParser(prog="python -m minigpt.bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
