"""Measuring the machine: one timer for runs that take turns, memory bandwidth, peak memory, per-token times.

Every timing in the bench goes through ``take_turns``: the runs are warmed up, then called in turns, one
call each per round (``minigpt.metrics.in_turns``, the loop the chapters' timers use too), on a clock that
waits for the device (``timed``). Taking turns lets a slow spell of a
shared machine slow every run alike instead of whichever one ran then; the fastest call of a run is the
one least disturbed by anything else (the advice of Python's ``timeit``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minigpt.checks import check_int
from minigpt.fast import FastDecoder
from minigpt.fast.native import available as native_available
from minigpt.fast.native import matvec as native_matvec
from minigpt.generate import generate, stream
from minigpt.metrics import in_turns
from minigpt.model import GPT

Runner = Callable[[int], Any]  # new tokens -> what the run made: ids (B, T + new), or decoded prompts

# How long each of the bench's bandwidth readings lasts: about as long as one decode run at the default
# settings, and no longer. A reading shorter than the runs it bounds can catch a fast moment of a shared
# machine that no run ever sees, and raise the bound above what any run could reach.
BANDWIDTH_SECONDS = 3.0


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU has nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Runner, n: int, device: torch.device) -> tuple[float, Any]:
    """Seconds ``run(n)`` took, the device's queued work included, and what it returned.

    >>> seconds, out = timed(lambda n: torch.zeros(1, n), 3, torch.device("cpu"))
    >>> seconds >= 0, out.shape
    (True, torch.Size([1, 3]))
    """
    sync(device)
    start = time.perf_counter()
    out = run(n)
    sync(device)
    return time.perf_counter() - start, out


@dataclass
class Turns:
    """One run's readings from ``take_turns``."""

    seconds: dict[int, list[float]]  # new tokens -> seconds of the call for that many, one per round
    peak_mb: float | None  # the largest ``PeakMemory`` of its calls (None where it cannot be read)
    output: Any  # what its last call returned


def take_turns(runs: dict[str, Runner], lengths: tuple[int, ...], repeats: int, device: torch.device, *,
               between: Callable[[], object] | None = None) -> dict[str, Turns]:
    """Time every run of ``runs`` for each of ``lengths`` new tokens, the runs taking turns, ``repeats`` rounds.

    Each run is first called once for 2 tokens, untimed (warm-up: kernel selection, the allocator,
    torch.compile's compilation). Then every round gives each run one turn: ``between()`` when given
    (something else measured right beside the runs, so that it sees the same spells of the machine), then
    one ``timed`` call per length, in order, each inside ``PeakMemory``.

    >>> turns = take_turns({"zeros": lambda n: torch.zeros(1, n)}, (1, 4), 3, torch.device("cpu"))
    >>> [len(s) for s in turns["zeros"].seconds.values()], turns["zeros"].output.shape
    ([3, 3], torch.Size([1, 4]))
    """
    check_int("repeats", repeats, 1)
    for run in runs.values():
        run(2)

    def turn(run: Runner) -> list[tuple[float, float | None, Any]]:  # (seconds, peak MB, output) per length
        readings = []
        for n in lengths:
            with PeakMemory(device) as peak:
                s, out = timed(run, n, device)
            readings.append((s, peak.mb, out))
        return readings

    rounds = in_turns({name: functools.partial(turn, run) for name, run in runs.items()}, repeats,
                      warm_up=False, between=between)
    return {name: _as_turns(lengths, readings) for name, readings in rounds.items()}


def _as_turns(lengths: tuple[int, ...], rounds: list[list[tuple[float, float | None, Any]]]) -> Turns:
    """One run's rounds of (seconds, peak MB, output) per length, gathered into its ``Turns``."""
    peaks = [peak for readings in rounds for _, peak, _ in readings]
    seconds = {n: [readings[i][0] for readings in rounds] for i, n in enumerate(lengths)}
    return Turns(seconds, None if None in peaks else max(peaks), rounds[-1][-1][2])


def measure(runs: dict[str, Runner], batch_size: int, new_tokens: int, repeats: int, device: torch.device, *,
            between: Callable[[], object] | None = None) -> dict:
    """Time to first token, decode tokens/s and peak memory of each method in ``runs`` (name -> Runner), by name.

    Time to first token is a whole 1-token generation (prefill + first pick). Decode speed comes from the
    difference: (time of N tokens − time of 1) covers the N − 1 decode steps, so tokens/s is
    B · (N − 1) / that difference, free of the prefill and of any fixed setup cost. The methods take turns
    (``take_turns``, both lengths in each turn, ``between`` before each turn), and each keeps its fastest
    runs. Peak memory is the largest of its runs.

    Each row also holds ``decode_runs``: the decode tokens/s of each round, its N-token run less the
    fastest 1-token run (less the round's own, a slow spell during that short run would make the round
    look faster than it was), so that their spread can be shown (``minigpt.metrics.spread``); the
    fastest of them is ``decode_tokens_per_s``, their median ``decode_median_tokens_per_s``; ``ids`` is
    what the last run made.

    >>> rows = measure({"zeros": lambda n: torch.zeros(1, 4 + n)}, 1, 3, 2, torch.device("cpu"))
    >>> rows["zeros"]["ids"].shape, len(rows["zeros"]["decode_runs"])
    (torch.Size([1, 7]), 2)
    """
    check_int("new_tokens", new_tokens, 2)
    rows = {}
    for name, turns in take_turns(runs, (1, new_tokens), repeats, device, between=between).items():
        ttft, full = min(turns.seconds[1]), turns.seconds[new_tokens]
        decode_runs = [batch_size * (new_tokens - 1) / max(s - ttft, 1e-9) for s in full]
        rows[name] = dict(ttft_ms=1000 * ttft, decode_tokens_per_s=max(decode_runs),
                          decode_median_tokens_per_s=statistics.median(decode_runs), total_s=min(full),
                          peak_memory_mb=turns.peak_mb, ids=turns.output, decode_runs=decode_runs)
    return rows


# --- what the memory allows ---------------------------------------------------------------------------

def measure_bandwidth(
    device: str | torch.device = "cpu", nbytes: int = 2**30, repeats: int = 5, seconds: float = 0.0
) -> float:
    """Memory *read* bandwidth in GB/s: the fastest of ``repeats`` timed reads of ``nbytes`` of fp32.

    Several kernels read (``read_kernels``), taking turns, because no single kernel reaches the memory's
    speed on every CPU: where one kernel reads slowly (torch's portable kernels, say), another keeps the
    bound a bound. The fastest read is kept: the others were slowed by something else, not by the memory,
    so the bound computed from it is one no method should beat. The tensor (1 GiB by default) is larger
    than any CPU's last-level cache, so the bytes really come from DRAM (or HBM on a GPU). ``nbytes`` is
    rounded down to whole rows of 1024 numbers (4096 bytes).

    With ``seconds`` > 0, each of the ``repeats`` readings instead streams the tensor over and over for at
    least that long (``read_rate``), with whichever kernel read fastest: a reading should last about as
    long as the runs it bounds. ``minigpt bench`` reads for ``BANDWIDTH_SECONDS``.

    >>> measure_bandwidth("cpu", nbytes=2**22, repeats=1) > 0
    True
    """
    device = torch.device(device)
    if nbytes < 4096:
        raise ValueError(f"nbytes must be at least 4096 (one row of 1024 fp32 numbers), got {nbytes}")
    x = torch.ones(nbytes // 4096 * 1024, device=device)
    reads = read_kernels(x)
    turns = take_turns({name: lambda n, read=read: read() for name, read in reads.items()}, (1,), repeats, device)
    fastest = {name: x.nbytes / min(t.seconds[1]) / 1e9 for name, t in turns.items()}  # GB/s
    if seconds <= 0:
        return max(fastest.values())
    read = reads[max(fastest, key=fastest.get)]
    return max(read_rate(read, x.nbytes, seconds, device) for _ in range(repeats))


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


def read_rate(read: Callable[[], object], nbytes: int, seconds: float, device: torch.device) -> float:
    """GB/s of ``read`` (which reads ``nbytes``), called again and again for at least ``seconds`` (once if 0).

    >>> read_rate(lambda: time.sleep(0.01), 10**9, 0.0, torch.device("cpu")) <= 100  # 1 GB in >= 10 ms
    True
    """
    sync(device)
    start, count = time.perf_counter(), 0
    while True:
        read()
        sync(device)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * nbytes / elapsed / 1e9


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


def machine(device: torch.device) -> dict:
    """What the numbers were measured on: the device and its name, torch's version and its threads.

    >>> sorted(machine(torch.device("cpu")))
    ['device', 'name', 'threads', 'torch']
    """
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return dict(device=str(device), name=name, torch=torch.__version__, threads=torch.get_num_threads())


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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


# --- for the chapters ---------------------------------------------------------------------------------

def step_times(model: GPT, prompt: str, new_tokens: int, use_cache: bool = True) -> list[float]:
    """Seconds each token took to appear when streaming ``prompt``'s continuation (the first includes prefill).

    With the cache the steps stay flat; without it each one recomputes the whole sequence and they grow
    with its length. The KV-cache chapter plots both.

    >>> from minigpt.model import GPTConfig
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

    One ``timed`` run each: the cached one is the readable loop, or with ``fast=True`` the fast path
    (``FastDecoder``); the other is ``generate(..., use_cache=False)``. ``ids`` is a (B, T) prompt
    without padding.

    >>> from minigpt.model import GPTConfig
    >>> result = cache_speedup(GPT(GPTConfig.from_preset("tiny")), torch.tensor([[15496]]), new_tokens=4)
    >>> result.identical
    True
    """
    device = model.transformer.wte.weight.device
    ids = ids.to(device)
    decoder = FastDecoder(model, ids.size(0), ids.size(1) + new_tokens) if fast else None

    def cached(n: int) -> torch.Tensor:
        return decoder.generate(ids, max_new_tokens=n).ids if decoder else generate(model, ids, max_new_tokens=n).ids

    cache_s, with_cache = timed(cached, new_tokens, device)
    no_cache_s, without = timed(lambda n: generate(model, ids, max_new_tokens=n, use_cache=False).ids,
                                new_tokens, device)
    return CacheSpeedup(cache_s, no_cache_s, no_cache_s / cache_s, torch.equal(with_cache, without))
