"""``minigpt bench``: how fast does the model decode, and how close is that to what the memory allows?

One process measures, side by side on the same weights, for each model, dtype and batch size:

- ``no-cache``: ``generate(..., use_cache=False)``, which recomputes the whole sequence every step;
- ``cache``: ``generate(...)``, the readable loop with the KV cache;
- ``fast``: ``minigpt.fast.FastDecoder``, the fast path;
- ``transformers``: Hugging Face's ``generate`` on a ``GPT2LMHeadModel`` holding the same weights, when
  transformers is installed (else skipped, with a note);
- ``llamacpp``: llama.cpp (``llama-cpp-python``'s binding) on the GGUF file ``minigpt export --to gguf``
  writes at the row's precision (fp32 -> f32, fp16 -> f16, q8_0, q4_0; ``minigpt.bench.peers.LlamaCppDecoder``),
  loaded once before the timing, with torch's number of threads, batch 1 only (the binding decodes one
  sequence); skipped with a note when llama-cpp-python is not installed, at int8 and bf16, which have no
  GGUF twin, and at q8_0-a8 and q4_0-a8 (llama.cpp's own arithmetic, which it runs at q8_0 and q4_0).

The models (``--models``) are ``random`` (the ``--preset`` shape, GPT-2 124M's by default, with random
weights: speed does not depend on them) and/or a trained one, by shipped name or path (``shakespeare``).

Each dtype is fp32, bf16, int8, fp16, q8_0, q4_0, q8_0-a8 or q4_0-a8 (the weights). With int8, ``fast`` is
``FastDecoder(weights="int8")`` (minigpt's per-channel int8, ``minigpt.quantize``) and the other methods
run torch's ``quantize_dynamic`` on the same fp32 weights, the peer a user would try first; ``int8_quality``
then measures what int8 costs on a trained model (held-out loss, greedy tokens against fp32). fp16, q8_0 and
q4_0 (GGUF's blocks of 32 with one fp16 scale) are ``FastDecoder(weights=...)`` and llama.cpp on the same
bytes; ``cache`` there runs the readable loop on ``round_weights(model, format)``, fp32 arithmetic on the
rounded weights: its tokens are the reference the others are checked against (its speed is fp32's, and its
bound too). q8_0-a8 and q4_0-a8 are q8_0's and q4_0's weights with llama.cpp's arithmetic: each matrix's input
rounded to Q8_0 blocks first (``FastDecoder(weights=..., activations="q8_0")``, and ``cache`` on
``round_weights(model, format, activations="q8_0")``), so their rows compare with llama.cpp's at q8_0 and q4_0,
same arithmetic against same arithmetic; their bound is the base format's. ``quality`` gives every precision's
held-out loss on the trained model.

Every run is greedy with EOS off, so each method makes exactly the tokens asked for. For each it reports
the time to first token (prefill + one token), decode tokens/s (the fastest run, and the median and range
of the runs), the peak memory of the run, the decode speed as a fraction of the *bandwidth bound*
(``minigpt.roofline.bandwidth_bound``) and, where llama.cpp ran at that precision, the ratio of the median
tokens/s to llama.cpp's (``vs_llamacpp``) and whether the tokens equal llama.cpp's. A decode step must read
every weight and the KV cache at least once, so it cannot take less than (bytes read) / (memory
bandwidth). The bandwidth is measured on the spot (``measure_bandwidth``), before and after the decode
runs, for ``BANDWIDTH_SECONDS`` each, and the faster reading is kept.

    minigpt bench                  # GPT-2 124M shape and shakespeare, CPU: batch 1 and 8, fp32 and int8
    minigpt bench --batch-sizes 1 --dtypes fp32 --new-tokens 64 --repeats 1 --models random   # a quick look
    minigpt bench --methods fast llamacpp --dtypes fp32 fp16 q8_0 q4_0 --batch-sizes 1 --repeats 3
    minigpt bench --methods cache fast llamacpp --dtypes q4_0 q4_0-a8 --batch-sizes 1   # llama.cpp's arithmetic
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

Results: tables on screen (a progress bar on stderr while it runs), a JSON file and a PNG plot. Measured
numbers, with the commands that made them, are kept in ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import torch

from minigpt.arguments import add_dataclass_arguments, dataclass_from_args, option
from minigpt.bench.measuring import BANDWIDTH_SECONDS, machine, measure_bandwidth
from minigpt.bench.peers import llama_cpp_version, transformers_version
from minigpt.bench.report import format_table, plot_results, write_json
from minigpt.bench.suites import (
    DTYPES,
    METHODS,
    SUITES,
    add_bounds,
    beam_suite,
    decode_suite,
    int8_quality,
    quality,
    speculative_suite,
    weights_and_activations,
)
from minigpt.checkpoint import load_model
from minigpt.checks import check_choice, check_int
from minigpt.model import GPT, PRESETS, GPTConfig
from minigpt.roofline import decode_step_bytes


def _bool_or_none(text: str) -> bool | None:
    """``--compile``'s reader: on/true, off/false, or auto (None)."""
    return {"true": True, "on": True, "false": False, "off": False, "auto": None}[text.lower()]


@dataclass
class BenchConfig:
    """What to measure. The defaults (GPT-2 124M shape with random weights and the shipped shakespeare,
    16-token prompt, 128 new tokens, batch 1 and 8, fp32 and int8, 2 runs each) take a few minutes on a
    small CPU."""

    preset: str = option("gpt2", f"model shape, random weights (speed does not depend on them): {', '.join(PRESETS)}")
    batch_sizes: tuple[int, ...] = option((1, 8), "batch sizes to measure; every row is a random prompt of "
                                                   "prompt_len tokens")
    prompt_len: int = option(16, "prompt length in tokens")
    new_tokens: int = option(128, "tokens generated per row (greedy, EOS off); at least 2")
    dtypes: tuple[str, ...] = option(("fp32", "int8"), "weights: fp32, bf16, int8, fp16, q8_0, q4_0, q8_0-a8 "
                                                        "and/or q4_0-a8 (all but fp32 and bf16: CPU only); -a8: "
                                                        "q8_0's or q4_0's weights with the activations rounded to "
                                                        "Q8_0 blocks before each product, as llama.cpp does; each "
                                                        "one's quality is measured on the target model; bf16 is "
                                                        "skipped where the device has no fast bf16 (CPUs without "
                                                        "AVX512-BF16/AMX)",
                                     choices=list(DTYPES), metavar=None)
    models: tuple[str, ...] = option(("random", "shakespeare"), "decode suite: the models to measure: random "
                                                                "(the preset's shape, random weights) and/or a "
                                                                "shipped name or path", metavar="MODEL")
    device: str = option("cpu", "cpu, cuda, cuda:1 …")
    repeats: int = option(2, "runs of each measurement; decode: the methods take turns and each keeps its "
                             "fastest run; speculative and beam: the median")
    methods: tuple[str, ...] = option(("cache", "fast", "transformers"), f"what to measure: {', '.join(METHODS)}",
                                      choices=list(METHODS), metavar=None)
    no_cache_max_batch: int = option(1, "largest batch size the no-cache method runs at: recomputing grows "
                                        "with the square of the length, and takes hours at large batch sizes")
    compile: bool | None = option(None, "torch.compile the fast path's decode step: on, off or auto (None: on "
                                        "CUDA only, for its CUDA graphs)", type=_bool_or_none, metavar="on|off|auto")
    suites: tuple[str, ...] = option(("decode",), "what to measure: decode (the methods above at each batch "
                                                  "size and dtype), speculative (draft-and-verify), beam (cost "
                                                  "per beam)", choices=list(SUITES), metavar=None)
    target: str = option("shakespeare", "speculative suite: the target model; int8: the model whose quality "
                                        "is measured; a shipped name or a path")
    draft: str = option("shakespeare-draft", "speculative suite: the draft model, a shipped name or a path")
    speculative_k: tuple[int, ...] = option((2, 4, 8), "speculative suite: draft lengths k to measure")
    num_beams: tuple[int, ...] = option((2, 4, 8), "beam suite: beam widths to measure against greedy")
    seed: int = option(0, "seed for the random weights, prompts and sampling")
    out_json: str = option("figures/bench.json", "where to write the results (JSON)")
    figure: str = option("figures/bench.png", "where to write the plot (PNG)")

    def __post_init__(self) -> None:
        self.dtypes, self.methods, self.suites = tuple(self.dtypes), tuple(self.methods), tuple(self.suites)
        self.models = tuple(self.models)
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
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise ValueError(f"models must name at least one model (random, a shipped name or a path), "
                             f"got {self.models}")
        if len(set(self.models)) < len(self.models):
            raise ValueError(f"models must not repeat a model, got {self.models}")
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


def run_bench(config: BenchConfig, *, progress: bool = True) -> dict:
    """Measure everything ``config`` asks for; write the JSON and the PNG; return the report (a dict).

    The report holds ``config``, ``machine`` (device name, torch, transformers and llama-cpp-python versions,
    threads), ``bandwidth_gb_s``, ``weight_bytes`` (per model and dtype, ``decode_step_bytes``), ``results``
    (the decode suite: one dict per model × dtype × batch size × method), ``int8_quality`` (with int8:
    ``int8_quality``'s rows), ``quality`` (with any dtype but fp32: each precision's held-out loss,
    ``quality``), ``speculative`` and ``beam`` (one dict per measured setting; empty when the suite was not
    asked for) and ``notes`` (what was skipped and why). The plot shows the decode suite, when it ran.

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> config = BenchConfig(preset="tiny", models=("random",), batch_sizes=(1,), new_tokens=3, dtypes=("fp32",),
    ...                      repeats=1, methods=("cache", "fast"), suites=("decode",), out_json=f"{out}/b.json",
    ...                      figure=f"{out}/b.png")
    >>> report = run_bench(config, progress=False)
    >>> sorted({r["method"] for r in report["results"]})
    ['cache', 'fast']
    """
    device = torch.device(config.device)
    decode = "decode" in config.suites
    bases = _decode_models(config, device) if decode else {}
    bandwidth = measure_bandwidth(device, repeats=2, seconds=BANDWIDTH_SECONDS)
    results, notes = decode_suite(config, bases, progress) if decode else ([], [])
    if results:  # measured again after the decode suite, the faster kept: a slow spell must not lower the bound
        bandwidth = max(bandwidth, measure_bandwidth(device, repeats=2, seconds=BANDWIDTH_SECONDS))
        add_bounds(results, {name: m.config for name, m in bases.items()}, config, bandwidth)
    int8 = decode and "int8" in config.dtypes and device.type == "cpu"
    int8_rows = int8_quality(config) if int8 else []
    precisions = quality(config, int8_rows) if decode and set(config.dtypes) - {"fp32"} else []
    weight_bytes = {name: {d: decode_step_bytes(m.config, weights=weights_and_activations(d)[0])
                           for d in config.dtypes} for name, m in bases.items()}
    report = dict(config=asdict(config), machine=machine(device) | dict(transformers=transformers_version(),
                                                                        llama_cpp=llama_cpp_version()),
                  bandwidth_gb_s=bandwidth, weight_bytes=weight_bytes, results=results, int8_quality=int8_rows,
                  quality=precisions,
                  speculative=speculative_suite(config, progress) if "speculative" in config.suites else [],
                  beam=beam_suite(config, bases["random"] if "random" in bases else _random_model(config, device),
                                        progress)
                  if "beam" in config.suites else [], notes=notes)
    write_json(report, config.out_json)
    if results:
        plot_results(report, config.figure)
    return report


def _random_model(config: BenchConfig, device: torch.device) -> GPT:
    """The ``preset`` shape with random weights, seeded with ``config.seed``."""
    torch.manual_seed(config.seed)
    return GPT(config.model_config()).eval().to(device)


def _decode_models(config: BenchConfig, device: torch.device) -> dict[str, GPT]:
    """The decode suite's models by name: ``random`` (``_random_model``) and the trained ones ``models`` names."""
    bases = {}
    for name in config.models:
        model = _random_model(config, device) if name == "random" else load_model(name, device=device)
        if config.prompt_len + config.new_tokens > model.config.block_size:
            raise ValueError(f"prompt_len + new_tokens must be <= {model.config.block_size} (the {name} context), "
                             f"got {config.prompt_len} + {config.new_tokens}")
        bases[name] = model
    return bases


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a ``--flag`` for every BenchConfig field (``minigpt.arguments``), plus ``--progress``.

    Flags not given stay out of the namespace, so ``BenchConfig``'s own defaults apply.

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> vars(parser.parse_args(["--batch-sizes", "1", "16", "--dtypes", "fp32"]))
    {'progress': True, 'batch_sizes': [1, 16], 'dtypes': ['fp32']}
    """
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar on stderr (default: on)")
    add_dataclass_arguments(parser, BenchConfig, suppress=True)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with the parsed arguments, print the table and where the files went; return 0.

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["--batch-sizes", "1", "--dtypes", "fp32"]))  # doctest: +SKIP
    method        dtype  batch  first token ms  decode tok/s  of bound  peak MB  same tokens
    ...
    """
    config = dataclass_from_args(BenchConfig, args)
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
