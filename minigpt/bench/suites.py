"""What ``minigpt bench`` measures: the decode suite, int8's quality, speculative decoding and beam search.

Each suite turns a ``BenchConfig`` into rows (dicts) for the report. Every run is greedy or seeded, with
EOS off, so each method makes exactly the tokens asked for, and methods that must agree are checked to.
"""

from __future__ import annotations

import copy
import statistics
import sys
from typing import TYPE_CHECKING, NamedTuple

import torch
from tqdm import tqdm

from minigpt.bench.measuring import Runner, bf16_supported, measure, take_turns
from minigpt.bench.peers import (
    LLAMACPP_DTYPES,
    LlamaCppDecoder,
    LogitsOnly,
    llama_cpp_version,
    quantize_dynamic,
    to_transformers,
    transformers_generate,
    transformers_version,
)
from minigpt.checkpoint import load_model
from minigpt.data import load_splits
from minigpt.fast import FastDecoder, UnsupportedOptions
from minigpt.fast.native import unavailable_reason
from minigpt.generate import Generation, generate
from minigpt.model import GPT, GPTConfig
from minigpt.quantize import quantize_model, round_weights
from minigpt.roofline import WEIGHT_FORMATS, bandwidth_bound
from minigpt.search import beam_search
from minigpt.speculative import prompt_lookup_generate, speculative_generate
from minigpt.tokenizer import encode
from minigpt.train import heldout_loss

if TYPE_CHECKING:  # the command line's settings; it imports this module, so not at run time
    from minigpt.bench.command import BenchConfig

METHODS = ("no-cache", "cache", "fast", "transformers", "llamacpp")
SUITES = ("decode", "speculative", "beam")
# the model's dtype for each; int8, fp16, q8_0, q4_0 and their -a8: an fp32 model whose matrices the method stores
# in that format
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32, "fp16": torch.float32,
          "q8_0": torch.float32, "q4_0": torch.float32, "q8_0-a8": torch.float32, "q4_0-a8": torch.float32}
# "-a8": the weights of the base format, each matrix's input rounded to Q8_0 blocks first, as llama.cpp computes
A8_DTYPES = {"q8_0-a8": "q8_0", "q4_0-a8": "q4_0"}  # bench dtype -> its weights' format
# formats the readable loop runs as round_weights(model, format, activations=...)
ROUNDED = ("fp16", "q8_0", "q4_0", *A8_DTYPES)
# prompts for the speculative suite and int8's quality: Shakespeare, the text the shipped models learned
SPECULATIVE_PROMPTS = (
    "ROMEO:\nBut soft, what light",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "To be, or not to be, that is the question:",
)
QUALITY_WINDOWS = 16  # int8 quality: held-out windows scored (of the model's context each)
QUALITY_NEW_TOKENS = 64  # int8 quality: greedy tokens per prompt compared with fp32's
# the precisions quality() measures through round_weights
QUALITY_FORMATS = ("fp16", "bf16", "q8_0", "q4_0", *A8_DTYPES)


def weights_and_activations(dtype: str) -> tuple[str, str]:
    """A bench dtype's weight format and its activations (``minigpt.quantize.ACTIVATIONS``): a "-a8" dtype is
    its base format's weights with Q8_0 activations, as llama.cpp multiplies them; the others keep float32.

    >>> weights_and_activations("q4_0-a8"), weights_and_activations("q4_0")
    (('q4_0', 'q8_0'), ('q4_0', 'float32'))
    """
    return (A8_DTYPES[dtype], "q8_0") if dtype in A8_DTYPES else (dtype, "float32")


# --- decode: every method, dtype and batch size -------------------------------------------------------

def plan(config: BenchConfig, has_transformers: bool,
         has_llamacpp: bool = False) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The (dtype, batch size, method) measurements to make on each model, and a note for each one skipped.

    >>> from minigpt.bench.command import BenchConfig
    >>> plan(BenchConfig(batch_sizes=(1,), dtypes=("fp32",), methods=("cache",)), has_transformers=False)[0]
    [('fp32', 1, 'cache')]
    >>> measurements, notes = plan(BenchConfig(batch_sizes=(1, 8), dtypes=("fp32",), methods=("llamacpp",)),
    ...                            has_transformers=False, has_llamacpp=True)
    >>> measurements, notes[0]
    ([('fp32', 1, 'llamacpp')], "llamacpp skipped at batch sizes [8]: llama.cpp's binding decodes one sequence")
    """
    device = torch.device(config.device)
    notes, dtypes = [], []
    for d in config.dtypes:
        if d == "bf16" and not bf16_supported(device):
            notes.append(f"bf16 skipped: {config.device} has no native bf16 matmul")
        elif d in ("int8", *ROUNDED) and device.type != "cpu":
            notes.append(f"{d} skipped: its kernels run on CPU only, not on {config.device}")
        else:
            dtypes.append(d)
    methods = list(config.methods)
    if "transformers" in methods and not has_transformers:
        methods.remove("transformers")
        notes.append("transformers skipped: not installed (pip install 'minigpt[dev]')")
    if "llamacpp" in methods and not has_llamacpp:
        methods.remove("llamacpp")
        notes.append("llamacpp skipped: llama-cpp-python is not installed (pip install 'minigpt[llama-cpp]')")
    elif "llamacpp" in methods and device.type != "cpu":
        methods.remove("llamacpp")
        notes.append(f"llamacpp skipped: the bench runs it on CPU only, not on {config.device}")
    skipped = {(d, b, m): why for d in dtypes for b in config.batch_sizes for m in methods
               if (why := _skip_reason(d, b, m, config)) is not None}
    for why in dict.fromkeys(skipped.values()):  # one note for each reason, naming what it skipped
        notes.append(why)
    measurements = [(d, b, m) for d in dtypes for b in config.batch_sizes for m in methods if (d, b, m) not in skipped]
    notes += _plan_notes(config, dtypes, {m for _, _, m in measurements})
    return measurements, notes


def _skip_reason(dtype: str, batch: int, method: str, config: BenchConfig) -> str | None:
    """Why ``method`` cannot run at ``dtype`` and ``batch`` (a note, the same for all it skips), or None."""
    big = [b for b in config.batch_sizes if b > config.no_cache_max_batch]
    if method == "no-cache" and batch > config.no_cache_max_batch:
        return f"no-cache skipped at batch sizes {big}: above no_cache_max_batch={config.no_cache_max_batch}"
    if method == "llamacpp":
        if dtype in A8_DTYPES:  # the same GGUF file as the base format: llama.cpp has no other arithmetic for it
            a8 = [d for d in config.dtypes if d in A8_DTYPES]
            missing = [A8_DTYPES[d] for d in a8 if A8_DTYPES[d] not in config.dtypes]
            ask = f"; add {', '.join(missing)} to dtypes for those rows" if missing else ""
            bases = ", ".join(A8_DTYPES[d] for d in a8)
            return (f"llamacpp skipped at {', '.join(a8)}: llama.cpp's CPU kernels always round the activations "
                    f"at q8_0 and q4_0, so its rows at {bases} are what these compare with{ask}")
        if dtype not in LLAMACPP_DTYPES:
            others = [d for d in config.dtypes if d not in LLAMACPP_DTYPES and d not in A8_DTYPES]
            return (f"llamacpp skipped at {', '.join(others)}: no GGUF twin (the GGUF export writes "
                    f"{', '.join(LLAMACPP_DTYPES.values())})")
        if batch > 1:
            return (f"llamacpp skipped at batch sizes {[b for b in config.batch_sizes if b > 1]}: llama.cpp's "
                    "binding decodes one sequence")
    if dtype in ROUNDED and method in ("no-cache", "transformers"):
        return (f"no-cache and transformers skipped at {', '.join(d for d in config.dtypes if d in ROUNDED)}: "
                "they have no such weights (cache runs the reference on the rounded weights)")
    return None


def _plan_notes(config: BenchConfig, dtypes: list[str], methods: set[str]) -> list[str]:
    """What the measured rows mean: which step the fast path runs, what peak MB counts, what each dtype is."""
    notes = []
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
    rounded, a8 = [d for d in dtypes if d in ROUNDED], [d for d in dtypes if d in A8_DTYPES]
    if a8:
        notes.append(f"{', '.join(a8)}: the weights of {', '.join(A8_DTYPES[d] for d in a8)} with the activations "
                     "rounded to Q8_0 blocks before each product, as llama.cpp does (fast: "
                     "FastDecoder(activations='q8_0')); every other dtype keeps float32 activations")
    if rounded and "cache" in methods:
        with_a8 = " (with activations='q8_0' at -a8)" if a8 else ""
        notes.append(f"cache at {', '.join(rounded)} is generate() on round_weights(model, format){with_a8}: "
                     "float32 arithmetic on the rounded weights, the reference the other methods' tokens are "
                     "checked against; it reads fp32 weights, so its bound is fp32's")
    if "llamacpp" in methods:
        notes.append(f"llamacpp: llama.cpp (llama-cpp-python {llama_cpp_version()}) on export_gguf's file at the "
                     "row's precision (fp32 -> f32, fp16 -> f16, q8_0, q4_0), loaded once before the timing, "
                     f"{torch.get_num_threads()} threads as torch, float32 keys and values in its cache, greedy "
                     "(argmax of its logits), EOS off; vs llama.cpp is the median tokens/s over llama.cpp's at "
                     "the same precision" + (" (at a -a8 dtype, its base format)" if a8 else ""))
    return notes


def bound_format(method: str, dtype: str) -> str:
    """The weight format (``minigpt.roofline.WEIGHT_FORMATS``) a method reads at a bench dtype.

    A "-a8" dtype reads its base format's bytes: the activations it rounds are not read from memory.

    >>> bound_format("fast", "q4_0"), bound_format("cache", "q4_0")  # cache runs the rounded fp32 model
    ('q4_0', 'fp32')
    >>> bound_format("fast", "q4_0-a8"), bound_format("cache", "q4_0-a8")
    ('q4_0', 'fp32')
    """
    if dtype in ROUNDED and method in ("cache", "no-cache", "transformers"):
        return "fp32"
    return weights_and_activations(dtype)[0]


def decode_suite(config: BenchConfig, bases: dict[str, GPT], progress: bool) -> tuple[list[dict], list[str]]:
    """Every method × dtype × batch size of the ``plan`` on each model of ``bases``: the rows of ``results``, notes.

    Everything measured on one model at one batch size, every method in every dtype, takes turns
    (``measure``): a slow spell of the machine then slows fp32 and int8 alike, so int8 ÷ fp32 compares runs
    made side by side. So every dtype's models stay alive while a model is measured. llama.cpp loads each
    precision once per model (``LlamaCppDecoder``), before the timing.
    """
    device = torch.device(config.device)
    measurements, notes = plan(config, transformers_version() is not None, llama_cpp_version() is not None)
    groups: dict[int, list[tuple[str, str]]] = {}
    for dtype, batch, method in measurements:
        groups.setdefault(batch, []).append((dtype, method))
    dtypes = dict.fromkeys(dtype for dtype, _, _ in measurements)  # in the plan's order
    method_set = {method for _, _, method in measurements}
    rows = {}
    bar = tqdm(total=len(bases) * len(groups), desc="bench decode", file=sys.stderr, disable=not progress,
               unit="batch size")
    for name, base in bases.items():
        models = {dtype: _models(base, dtype, method_set) for dtype in dtypes}
        llama = {dtype: LlamaCppDecoder(base, dtype, config.prompt_len + config.new_tokens)
                 for dtype in dtypes if (dtype, 1, "llamacpp") in measurements}
        for batch, group in groups.items():
            bar.set_postfix_str(f"{name}, batch {batch}: {len(group)} methods × dtypes")
            ids = prompt_ids(batch, config, device)
            runs = {}
            for dtype, method in group:
                try:
                    runs[f"{method} {dtype}"] = _runner(method, base, models[dtype], llama.get(dtype), ids, config,
                                                        dtype)
                except UnsupportedOptions as e:  # the fast path cannot run this format on this CPU
                    notes.append(f"fast skipped at {dtype} on {name}: {e}")
            measured = measure(runs, batch, config.new_tokens, config.repeats, device)
            del runs  # the fast paths' copies of the weights
            rows |= {(name, dtype, batch, method): measured[f"{method} {dtype}"] for dtype, method in group
                     if f"{method} {dtype}" in measured}
            bar.update()
        for decoder in llama.values():
            decoder.close()
    bar.close()
    results = [dict(model=name, method=method, dtype=dtype, batch_size=batch, **rows[name, dtype, batch, method])
               for name in bases for dtype, batch, method in measurements if (name, dtype, batch, method) in rows]
    _mark_identical(results)
    return results, list(dict.fromkeys(notes))


def add_bounds(results: list[dict], configs: dict[str, GPTConfig], config: BenchConfig, bandwidth_gb_s: float) -> None:
    """Set each row's ``bound_tokens_per_s`` (``minigpt.roofline.bandwidth_bound``) and ``bound_fraction``.

    The bound is taken on the row's model (``configs``, by name) in the weight format the row's method reads
    (``bound_format``), at the average context of the decode steps, prompt_len + new_tokens / 2.
    """
    context = config.prompt_len + config.new_tokens // 2
    for r in results:
        bound = bandwidth_bound(configs[r["model"]], bandwidth_gb_s, r["batch_size"], context,
                                weights=bound_format(r["method"], r["dtype"]))
        r.update(bound_tokens_per_s=bound, bound_fraction=r["decode_tokens_per_s"] / bound)


def _runner(method: str, base: GPT, models: tuple, llama: LlamaCppDecoder | None, ids: torch.Tensor,
            config: BenchConfig, dtype: str = "fp32") -> Runner:
    """A function that generates n new tokens for the prompt ``ids`` with ``method``; EOS off, greedy.

    ``models`` is ``_models``' (readable model, transformers' model) for ``dtype``; the fast path builds its
    decoder from ``base`` (the fp32 model) where it stores the weights in a format of its own (int8, fp16,
    q8_0, q4_0, and at q8_0-a8 and q4_0-a8 those weights with Q8_0 activations), and from the readable model
    otherwise (fp32, bf16).
    """
    model, hf_model = models
    mask = torch.ones_like(ids)
    if method in ("no-cache", "cache"):
        use_cache = method == "cache"
        return lambda n: generate(model, ids, attention_mask=mask, max_new_tokens=n, use_cache=use_cache).ids
    if method == "fast":
        device = torch.device(config.device)
        own_format = dtype in ("int8", *ROUNDED)
        compile = device.type == "cuda" if config.compile is None and not own_format else bool(config.compile)
        weights, activations = weights_and_activations(dtype) if own_format else ("float", "float32")
        decoder = FastDecoder(base if own_format else model, ids.size(0), ids.size(1) + config.new_tokens,
                              compile=compile, weights=weights, activations=activations)
        return lambda n: decoder.generate(ids, mask, max_new_tokens=n).ids
    if method == "llamacpp":
        return lambda n: llama.generate(ids, n)
    return lambda n: transformers_generate(hf_model, ids, n)


def _models(base: GPT, dtype: str, methods: set[str]) -> tuple:
    """The readable model and transformers' (or None) for ``dtype``, each only where ``methods`` need it.

    int8: both through ``quantize_dynamic``; fp16, q8_0, q4_0: the readable model is
    ``round_weights(base, dtype)`` (no transformers), and at q8_0-a8, q4_0-a8
    ``round_weights(base, format, activations="q8_0")``; fp32 and bf16: ``base`` in that dtype.
    """
    readable = bool(methods & {"cache", "no-cache"})
    with_transformers = "transformers" in methods
    if dtype in ROUNDED:
        weights, activations = weights_and_activations(dtype)
        return round_weights(base, weights, activations=activations) if readable else None, None
    if dtype == "int8":
        hf = to_transformers(base) if with_transformers else None
        return quantize_dynamic(base) if readable else None, None if hf is None else quantize_dynamic(hf)
    model = base if dtype == "fp32" else copy.deepcopy(base).to(DTYPES[dtype])
    return model, to_transformers(model) if with_transformers else None


def prompt_ids(batch: int, config: BenchConfig, device: torch.device) -> torch.Tensor:
    """Random (batch, prompt_len) prompt ids, the same for every method at a batch size, so tokens compare.

    >>> from minigpt.bench.command import BenchConfig
    >>> prompt_ids(2, BenchConfig(prompt_len=3), torch.device("cpu")).shape
    torch.Size([2, 3])
    """
    rng = torch.Generator().manual_seed(config.seed + batch)
    return torch.randint(0, config.model_config().vocab_size, (batch, config.prompt_len), generator=rng).to(device)


def _mark_identical(results: list[dict]) -> None:
    """Set ``same_tokens_as_cache``, ``same_tokens_as_llamacpp`` and ``vs_llamacpp`` on each row; drop the ids.

    Each compares with the row of that method on the same model, dtype and batch size (None where it is
    missing); ``vs_llamacpp`` is the ratio of the median decode tokens/s (1 on llama.cpp's own row). A
    "-a8" row (llama.cpp's arithmetic, which llama.cpp runs at its base format) compares with llama.cpp's
    row at that base format.
    """
    # int8 rows are two different quantizations: their agreement with fp32 is int8_quality's job
    by_method = {(r["method"], r["model"], r["dtype"], r["batch_size"]): r for r in results
                 if not (r["method"] == "cache" and r["dtype"] == "int8")}
    for r in results:
        cache = by_method.get(("cache", r["model"], r["dtype"], r["batch_size"]))
        llama = by_method.get(("llamacpp", r["model"], weights_and_activations(r["dtype"])[0], r["batch_size"]))
        for key, ref in (("same_tokens_as_cache", cache), ("same_tokens_as_llamacpp", llama)):
            r[key] = None if ref is None else torch.equal(r["ids"].cpu(), ref["ids"].cpu())
        median = r["decode_median_tokens_per_s"]
        r["vs_llamacpp"] = None if llama is None else median / llama["decode_median_tokens_per_s"]
    for r in results:
        del r["ids"]


# --- int8 quality -------------------------------------------------------------------------------------

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
                         lambda ids: fp32_fast.generate(ids, max_new_tokens=n).ids,
                         lambda ids: int8_fast.generate(ids, max_new_tokens=n).ids),
                "cache": _readable_pair(model, n)}
    if "transformers" in config.methods and transformers_version() is not None:
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
    return (LogitsOnly(hf), LogitsOnly(int8), lambda ids: transformers_generate(hf, ids, n),
            lambda ids: transformers_generate(int8, ids, n))


# --- every precision's quality ------------------------------------------------------------------------

def quality(config: BenchConfig, int8_rows: list[dict]) -> list[dict]:
    """What each precision of ``config.dtypes`` costs on a trained model (``config.target``), a row each.

    fp32 first, then each of ``QUALITY_FORMATS`` asked for, as ``round_weights(model, format)``: the model
    every method computes at that precision (the matrices and the token table rounded, the rest fp32); at
    q8_0-a8 and q4_0-a8, ``round_weights(model, format, activations="q8_0")``, each matrix's input rounded
    to Q8_0 blocks too, as llama.cpp computes.
    Each row holds the held-out loss (nats/token, ``QUALITY_WINDOWS`` windows, as ``int8_quality``), its
    change from fp32's, the bytes a matrix weight takes (``minigpt.roofline.WEIGHT_FORMATS``) and the
    share of greedy tokens equal to fp32's (``QUALITY_NEW_TOKENS`` after each ``SPECULATIVE_PROMPTS``
    prompt, run free). int8 is the fast path's row of ``int8_rows`` (``int8_quality``), where measured.
    """
    formats = [d for d in QUALITY_FORMATS if d in config.dtypes]
    model = load_model(config.target).eval()
    _, heldout = load_splits()
    n = _room_after_prompts(QUALITY_NEW_TOKENS, model.config.block_size)
    prompts = [torch.tensor([encode(p)]) for p in SPECULATIVE_PROMPTS]
    reference = [generate(model, ids, max_new_tokens=n).ids[0, ids.size(1):] for ids in prompts]
    rows = []
    for fmt in ("fp32", *formats):
        weights, activations = weights_and_activations(fmt)
        rounded = model if fmt == "fp32" else round_weights(model, weights, activations=activations)
        loss = heldout_loss(rounded, heldout, model.config.block_size, max_windows=QUALITY_WINDOWS)
        same = sum(int((generate(rounded, ids, max_new_tokens=n).ids[0, ids.size(1):] == ref).sum())
                   for ids, ref in zip(prompts, reference, strict=True))
        rows.append(dict(precision=fmt, bytes_per_weight=WEIGHT_FORMATS[weights], heldout_loss=loss,
                         loss_change=loss - rows[0]["heldout_loss"] if rows else 0.0,
                         greedy_match=same / (n * len(prompts))))
    fast = next((r for r in int8_rows if r["method"] == "fast"), None)
    if fast is not None:
        rows.append(dict(precision="int8", bytes_per_weight=WEIGHT_FORMATS["int8"],
                         heldout_loss=fast["heldout_loss_int8"],
                         loss_change=fast["heldout_loss_int8"] - fast["heldout_loss_fp32"],
                         greedy_match=fast["greedy_match"]))
    return rows


# --- speculative decoding and beam search -------------------------------------------------------------

def _median_run(run: Runner, n: int, config: BenchConfig) -> tuple[float, object]:
    """The median seconds of ``run(n)`` over ``config.repeats`` calls (``take_turns``), and its last output."""
    turns = take_turns({"run": run}, (n,), config.repeats, torch.device(config.device))["run"]
    return statistics.median(turns.seconds[n]), turns.output


def speculative_suite(config: BenchConfig, progress: bool) -> list[dict]:
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
    measurements = [(mode, method, k) for mode in ("greedy", "sample") for method, k in methods]
    hf = (to_transformers(target), to_transformers(draft)) if "transformers" in config.methods else (None, None)
    if hf[0] is not None:
        measurements += [("greedy", "transformers alone", None),
                         *(("greedy", "transformers assisted", k) for k in config.speculative_k)]
    rows, baseline, reference = [], {}, None
    for mode, method, k in tqdm(measurements, desc="bench speculative", file=sys.stderr, disable=not progress,
                                unit="run"):
        sampling = dict(do_sample=True, seed=config.seed) if mode == "sample" else {}
        seconds, outputs = _median_run(_speculative_runner(method, target, draft, hf, k, sampling), n, config)
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


def _speculative_runner(method: str, target: GPT, draft: GPT, hf: tuple, k: int | None, sampling: dict) -> Runner:
    """A function that decodes n new tokens for each of ``SPECULATIVE_PROMPTS`` with ``method``: a list of them."""
    def counted(out: Generation) -> _Decoded:
        return _Decoded(out.new_tokens[0], out.num_proposed, out.num_accepted, out.num_target_passes)

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


def beam_suite(config: BenchConfig, model: GPT, progress: bool) -> list[dict]:
    """Greedy and beam search at each width on the benchmark model, and transformers' on the same weights.

    Batch 1, fp32, EOS off. With no EOS every beam runs to ``new_tokens``, so each step costs one forward
    pass over ``num_beams`` rows; the cost per beam, (beam time / greedy time) / num_beams, shows how much
    batching the beams saves. transformers runs when it is installed and ``methods`` names it.
    """
    ids, n = prompt_ids(1, config, torch.device(config.device)), config.new_tokens
    hf = to_transformers(model) if "transformers" in config.methods else None
    widths = (1, *config.num_beams)
    bar = tqdm(total=len(widths) * (1 + (hf is not None)), desc="bench beam", file=sys.stderr,
               disable=not progress, unit="run")

    def timed(run: Runner) -> tuple[float, torch.Tensor]:
        bar.update()
        return _median_run(run, n, config)

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
    return beam_search(model, ids, num_beams=num_beams, max_new_tokens=n).ids[:1]
