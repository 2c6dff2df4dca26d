"""The ``minigpt`` command.

    minigpt generate "ROMEO:"                      # sample a continuation from the default model
    minigpt generate "ROMEO:" --temperature 0      # greedy
    minigpt generate "ROMEO:" --weights int8       # int8 weights: a quarter of the bytes per token
    minigpt generate "ROMEO:" --weights q4_0       # llama.cpp's 4-bit blocks: 18 bytes per 32 weights
    minigpt generate "ROMEO:" --weights q4_0 --activations q8_0   # and llama.cpp's arithmetic on them
    minigpt generate "ROMEO:" --readable -v        # the chapters' loop, not the fast path; -v says which ran
    minigpt generate "ROMEO:" --watermark          # watermarked text (chapter 14): a green list gets δ = 2
    minigpt detect "ROMEO: ..." --z-threshold 3    # is TEXT watermarked? its green tokens, z-score and verdict
    minigpt generate "Hello" --model gpt2          # OpenAI's GPT-2 (needs the hub extra and a network)
    minigpt train --max-steps 2000                 # train on the Shakespeare corpus
    minigpt bench                                  # decoding speed, side by side
    minigpt explore "ROMEO:" --out explore.html    # a page that replays 20 steps, with the decoding sliders
    minigpt export shakespeare --to hf out/        # a directory transformers loads (GPT2LMHeadModel)
    minigpt export shakespeare --to gguf out.gguf  # one file llama.cpp runs (llama-completion -m out.gguf -c 256)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minigpt import __version__
from minigpt.arguments import add_dataclass_arguments, dataclass_from_args
from minigpt.checkpoint import HUB_REPOS, load_model, shipped_models
from minigpt.checks import check_device, check_int
from minigpt.generate import PAD_TOKEN_ID, DecodingSettings, make_generator, prepare_prompt, stream, text_pieces
from minigpt.logits import LogitsSettings, WatermarkSettings
from minigpt.model import GPT
from minigpt.quantize import (
    ACTIVATIONS,
    BLOCK_FORMATS,
    BLOCK_SIZE,
    WEIGHT_FORMATS,
    choose_int8_kernel,
    quantize_model,
    round_weights,
)
from minigpt.tokenizer import EOT_TOKEN, EOT_TOKEN_ID, encode

if TYPE_CHECKING:  # the fast path is imported when generate uses it
    from minigpt.fast import FastDecoder

# The other commands' modules (train, bench, explore, export) are imported inside them: a command loads only
# what it uses, and ``minigpt generate`` starts without the bench, the trainer or the widget. The fast path
# (minigpt.fast) is imported when generate uses it; the weight formats (minigpt.quantize, a few constants and
# functions on top of the model) are imported with the command line.

DEFAULT_MODEL = "shakespeare"
# --weights: the model's own float weights, int8 (minigpt.quantize's kernels), or a format its matrices are
# rounded through (each of which the fast path decodes too: minigpt.fast.WEIGHTS)
WEIGHTS = ("float", "int8", *WEIGHT_FORMATS)
# --activations: what each matrix's input is rounded through; q8_0 with the block formats only, the weights
# llama.cpp multiplies by Q8_0 activations
ACTIVATION_WEIGHTS = BLOCK_FORMATS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minigpt`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, ConnectionError) as e:
        print(f"minigpt {args.command}: error: {e}", file=sys.stderr)
        return 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand; only ``command``'s flags are added (every one's when None).

    A command's flags may need its module (``train``'s come from ``TrainConfig``), so the other commands'
    modules are not imported to parse one command's line.

    >>> build_parser("generate").parse_args(["generate", "Hi", "--top-k", "5"]).top_k
    5
    """
    parser = argparse.ArgumentParser(
        prog="minigpt", description="An educational GPT-2: generate text, train, benchmark."
    )
    parser.add_argument("--version", action="version", version=f"minigpt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add) in COMMANDS.items():
        p = commands.add_parser(name, help=help)
        if command in (None, name):
            add(p)
    return parser


def _add_generate(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Continue PROMPT with a model, streaming the new text to stdout token by token. By default it samples "
        "at temperature 0.8 from the 50 most likely tokens; --temperature 0 gives greedy decoding. A logits "
        "setting's off value (top-k 0, top-p 1, min-p 0, penalty 1 …) or 'none' switches it off. It decodes on "
        "the fast path (minigpt.fast, a decode step in C) wherever this machine runs it, picking each token as the "
        "chapters' readable loop does from the same logits; --readable runs that loop itself."
    )
    p.add_argument("prompt", help="the text to continue")
    _add_model_option(p)
    p.add_argument("--max-new-tokens", type=int, default=100, help="how many tokens to add (default 100)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling: same seed, same text")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:1 or mps (default cpu)")
    p.add_argument("--weights", choices=WEIGHTS, default="float",
                   help="the weights' format (chapter 12): float, the checkpoint's own (default); int8, every matrix "
                   "in int8 with one scale per output channel (CPU); fp16 or bf16, the block matrices and the token "
                   "table in 16 bits; q8_0 or q4_0, those in llama.cpp's blocks of 32 numbers with one fp16 scale "
                   "(minigpt.quantize.round_weights)")
    p.add_argument("--activations", choices=ACTIVATIONS, default="float32",
                   help="with --weights q8_0 or q4_0: float32, each product exact on the rounded weights (default); "
                   "q8_0, llama.cpp's arithmetic: each matrix's input rounded to Q8_0 blocks of 32 first, so every "
                   "block's product is a sum of integers, as llama.cpp computes it (the inputs rounded cost a little "
                   "loss)")
    p.add_argument("--readable", action="store_true",
                   help="decode with the chapters' readable loop (minigpt.generate) rather than the fast path "
                   "(minigpt.fast.FastDecoder, the C decode step), which picks the same tokens faster and runs "
                   "whenever this CPU can run it")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say on stderr which loop decodes (and why, for the readable one) and how fast it went")
    p.add_argument("--stop", action="append", default=None, help="stop before this string (repeatable)")
    p.add_argument(
        "--eos", action="store_true", help="stop at <|endoftext|> (by default it is printed like any token)"
    )
    p.add_argument(
        "--allow-special",
        action="store_true",
        help="read <|endoftext|> in PROMPT as the end-of-text token (by default such a prompt is an error)",
    )
    p.add_argument(
        "--token-healing",
        action="store_true",
        help="back up PROMPT's last token and let the model write its text again, e.g. a final blank line as the "
        "corpus writes it (chapter 10); without it, a prompt ending where the corpus rarely does gets a warning",
    )
    # one flag per LogitsSettings field, its help the field's doc: a new sampler needs no line here
    add_dataclass_arguments(p.add_argument_group("logits settings (minigpt.logits.LogitsSettings)"), LogitsSettings,
                            defaults={"temperature": 0.8, "top_k": 50})
    p.add_argument("--watermark", action="store_true",
                   help="watermark the text: add δ to a green list of tokens seeded by the context (chapter 14); "
                   "minigpt detect finds it. The flags below change its settings")
    _add_watermark_options(p, "watermark settings, with --watermark (minigpt.logits.WatermarkSettings)")
    p.set_defaults(run=_run_generate)


def _add_watermark_options(p: argparse.ArgumentParser, title: str) -> None:
    """One flag per ``WatermarkSettings`` field; a flag not given stays out of the namespace (its default applies)."""
    add_dataclass_arguments(p.add_argument_group(title), WatermarkSettings, suppress=True)


def watermark_settings(args: argparse.Namespace) -> WatermarkSettings:
    """The ``WatermarkSettings`` of parsed flags, the defaults for those not given.

    >>> watermark_settings(argparse.Namespace(greenlist_ratio=0.5, seed=1)).greenlist_ratio
    0.5
    """
    return dataclass_from_args(WatermarkSettings, args)


def _check_watermark_flags(args: argparse.Namespace) -> None:
    """Refuse a watermark setting given without ``--watermark``: it would silently do nothing."""
    lone = [f.metadata["name"] or "--" + f.name.replace("_", "-") for f in dataclasses.fields(WatermarkSettings)
            if f.name in vars(args)]
    if lone and not args.watermark:
        raise ValueError(f"{', '.join(lone)} set(s) the watermark, which is off: pass --watermark too")


def logits_settings(args: argparse.Namespace) -> LogitsSettings:
    """The ``LogitsSettings`` of parsed flags; an off value (``minigpt.logits.OFF``, e.g. ``--top-k 0``) is None.

    ``--watermark`` brings the watermark flags' ``WatermarkSettings``.

    >>> logits_settings(argparse.Namespace(temperature=0.8, top_k=0, top_p=0.9, seed=1))
    LogitsSettings(temperature=0.8, top_p=0.9)
    """
    given = vars(args)
    values = {f.name: given[f.name] for f in dataclasses.fields(LogitsSettings) if f.name in given}
    if values.get("watermark"):
        values["watermark"] = watermark_settings(args)
    return LogitsSettings.with_off_values(**values)


def _add_model_option(p: argparse.ArgumentParser) -> None:
    """``--model``, shared by the commands that load one model."""
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a shipped model ({', '.join(shipped_models()) or 'none installed'}), a checkpoint "
        f"directory, a model.safetensors file, or a GPT-2 name to download ({', '.join(HUB_REPOS)}); "
        f"default: {DEFAULT_MODEL}",
    )


def _check_default_model(model: str) -> None:
    """Refuse, before any work, to run with the default model when it is not installed."""
    if model == DEFAULT_MODEL and DEFAULT_MODEL not in shipped_models():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL!r} is not installed; pass --model with a checkpoint "
            f"directory or a GPT-2 name ({', '.join(HUB_REPOS)})"
        )


def _device(value: str) -> torch.device:
    """``--device``, checked while parsing, so a bad one is an argparse error (exit status 2) like a bad int."""
    try:
        return check_device("--device", value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--device ")) from e


def _add_train(p: argparse.ArgumentParser) -> None:
    from minigpt import train

    p.description = (
        "Train a GPT on the shipped Shakespeare corpus (three works held out). Every flag overrides the "
        "--config JSON file, which overrides the defaults. Under torchrun it trains with DDP."
    )
    train.add_arguments(p)
    p.set_defaults(run=train.run)


def _add_bench(p: argparse.ArgumentParser) -> None:
    from minigpt import bench

    p.description = (
        "Measure decoding speed side by side in one process (default: the GPT-2 124M shape with random "
        "weights): tokens/s, time to first token, peak memory and the share of the memory-bandwidth bound; "
        "prints a table, writes JSON and a PNG."
    )
    bench.add_arguments(p)
    p.set_defaults(run=bench.run)


def _run_generate(args: argparse.Namespace) -> int:
    if EOT_TOKEN in args.prompt and not args.allow_special:  # the library would name its keyword, not the flag
        raise ValueError(
            f"the prompt contains {EOT_TOKEN}; pass --allow-special to read it as the end-of-text token "
            f"(id {EOT_TOKEN_ID}), or remove it from the prompt"
        )
    _check_default_model(args.model)
    _check_watermark_flags(args)
    logits = logits_settings(args)  # a bad option fails here, before the model is loaded
    s = DecodingSettings(  # and so does a contradiction, e.g. min-new-tokens > max-new-tokens
        max_new_tokens=args.max_new_tokens,
        do_sample=logits.temperature > 0,
        eos_token_id=EOT_TOKEN_ID if args.eos else None,
        stop=args.stop,
        allow_special=args.allow_special,
        logits=logits,
    )
    if args.weights == "int8" and args.device.type != "cpu":
        raise ValueError(f"--weights int8 runs on CPU only (its kernels are CPU kernels), got --device {args.device}")
    check_activations(args.activations, args.weights)
    model = load_model(args.model, device=args.device)
    _check_blocks(args.weights, model)
    pieces, loop = _pieces(model, args, s)
    del model  # the fast path decodes its own copy of the weights: the model's are freed (a readable stream keeps them)
    if args.verbose:
        print(f"minigpt generate: decoding with {loop}", file=sys.stderr)
    if not args.token_healing:
        _warn_about_the_boundary(args.prompt, args.model, args.allow_special)
    print(args.prompt, end="", flush=True)
    start, first, n = time.perf_counter(), None, 0
    for _, piece in pieces:
        first, n = first or time.perf_counter() - start, n + 1
        print(piece, end="", flush=True)
    print()
    if args.verbose and n:
        seconds = time.perf_counter() - start
        print(f"minigpt generate: {n} new tokens in {seconds:.2f} s ({n / seconds:.0f} tokens/s), the first after "
              f"{first:.3f} s (the prompt's pass)", file=sys.stderr)
    return 0


def _pieces(model: GPT, args: argparse.Namespace, s: DecodingSettings) -> tuple[Iterator[tuple[int, str]], str]:
    """The ``(token, text piece)`` stream of ``minigpt generate``, and which loop makes it (for ``--verbose``).

    On the fast path the decoder holds its own copy of the weights, so nothing here keeps ``model``.
    """
    int8_kernel = _int8_kernel(model) if args.weights == "int8" else None
    why = readable_reason(args, int8_kernel)
    # what -v says of the numbers: the weights' format, and the activations' where they are rounded too
    formats = f"{args.weights} weights" + (f", {args.activations} activations" if args.activations != "float32" else "")
    if why is not None:
        model = readable_model(model, args.weights, int8_kernel, activations=args.activations)
        pieces = stream(model, args.prompt, seed=args.seed, token_healing=args.token_healing, logits=s.logits,
                        max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, eos_token_id=s.eos_token_id,
                        stop=s.stop, allow_special=s.allow_special)
        return pieces, f"the readable loop (minigpt.generate.stream, {formats}): {why}"
    from minigpt.fast import FastDecoder

    ids = prepare_prompt(model, args.prompt, None, s)[0]  # encoded and cropped as the readable loop does
    decoder = FastDecoder(model, 1, ids.size(1) + s.max_new_tokens, weights=args.weights,
                          activations=args.activations, int8_kernel=int8_kernel or "auto")
    tokens = fast_tokens(decoder, ids, s, make_generator(args.seed, None, ids.device))
    loop = f"the fast path (minigpt.fast.FastDecoder, {formats}, the C decode step)"
    return text_pieces(tokens, s), loop


def check_activations(activations: str, weights: str) -> None:
    """Refuse ``--activations`` other than float32 unless ``--weights`` is a block format (q8_0, q4_0): llama.cpp
    rounds the activations to Q8_0 only for those, and the other formats have no such arithmetic here.

    >>> check_activations("q8_0", "q4_0")
    >>> check_activations("q8_0", "int8")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: --activations q8_0 needs --weights q8_0 or q4_0 (llama.cpp's arithmetic on its blocks), got ...
    """
    if activations not in ACTIVATIONS:
        raise ValueError(f"--activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}")
    if activations != "float32" and weights not in ACTIVATION_WEIGHTS:
        raise ValueError(f"--activations {activations} needs --weights {' or '.join(ACTIVATION_WEIGHTS)} (llama.cpp's "
                         f"arithmetic on its blocks), got --weights {weights}; other weights take --activations "
                         "float32")


def readable_reason(args: argparse.Namespace, int8_kernel: str | None = None) -> str | None:
    """Why ``minigpt generate`` decodes ``args`` with the readable loop, or None where the fast path decodes them.

    The fast path is ``FastDecoder``'s C decode step: CPU, float32, and a C compiler to build it. It decodes
    every logits setting (``fast_tokens`` picks with the readable loop's chain), so only the switches the
    readable loop alone has send a run there, and a machine where the C step cannot run (no compiler, a
    GPU, a format or int8 kernel the step lacks) decodes there quietly. ``int8_kernel``: with int8 weights,
    the kernel both loops use (``_int8_kernel``).

    >>> readable_reason(build_parser("generate").parse_args(["generate", "Hi", "--readable"]))
    '--readable'
    """
    if args.readable:
        return "--readable"
    if args.token_healing:
        return "--token-healing re-writes the prompt's end, which only the readable loop does"
    if args.max_new_tokens == 0:
        return "--max-new-tokens 0: no token to decode"
    if args.device.type != "cpu":
        return f"the C decode step runs on CPU, got --device {args.device}"
    from minigpt.fast import choose_matmul
    from minigpt.fast.native import unavailable_reason

    try:  # the fast path's own table of what runs here (minigpt.fast.options)
        matmul = choose_matmul("auto", args.device, weights=args.weights, int8_kernel=int8_kernel)
    except ValueError as e:  # UnsupportedOptions, or a format this version of the fast path does not have
        return f"the fast path cannot decode --weights {args.weights} here: {e}"
    if matmul == "native":
        return None
    reason = unavailable_reason()
    if reason:
        return f"the C decode step cannot run here: {reason}"
    return f"the C decode step does not run {args.weights} weights with the {int8_kernel!r} int8 kernel"


def _check_blocks(weights: str, model: GPT) -> None:
    """Refuse a block format (q8_0, q4_0: blocks of 32 numbers along each row) for a model whose rows do not split
    into blocks, naming the flag, before either loop rounds anything."""
    if weights not in BLOCK_FORMATS:
        return
    width = model.config.n_embd  # every row is n_embd or 4 n_embd numbers long: the token table's, each matrix's
    if width % BLOCK_SIZE:
        raise ValueError(f"--weights {weights} stores blocks of {BLOCK_SIZE} numbers along each matrix row, so it "
                         f"needs n_embd a multiple of {BLOCK_SIZE}; this model has n_embd={width}: use float, int8, "
                         "fp16 or bf16")


def _int8_kernel(model: GPT) -> str:
    """The int8 kernel this CPU runs fastest, timed once on an MLP matrix as ``FastDecoder`` times it: both loops
    then compute with the same kernel (``minigpt.quantize.choose_int8_kernel``)."""
    return choose_int8_kernel("auto", model.transformer.h[0].mlp.c_fc.weight.detach())


def readable_model(model: GPT, weights: str, int8_kernel: str | None = None, *, activations: str = "float32") -> GPT:
    """The model the readable loop decodes for ``--weights`` and ``--activations``: ``model`` itself for float, else
    a copy whose weights went through the format, as the fast path stores them (``minigpt.quantize``), and with
    ``activations="q8_0"`` each matrix's input rounded to Q8_0 blocks, as the fast path rounds it.

    >>> from minigpt.model import GPTConfig
    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> readable_model(model, "float") is model
    True
    >>> readable_model(model, "q4_0", activations="q8_0") is model
    False
    """
    check_activations(activations, weights)
    if weights == "float":
        return model
    if weights == "int8":
        return quantize_model(model, int8_kernel or "auto")  # every matrix an Int8Linear, the head too
    return round_weights(model, weights, activations=activations)


@torch.inference_mode()
def fast_tokens(
    decoder: FastDecoder, ids: torch.Tensor, s: DecodingSettings, rng: torch.Generator | None
) -> Iterator[int]:
    """The new tokens after the (1, T) prompt ``ids``, one at a time: the logits of ``decoder`` (a
    ``minigpt.fast.FastDecoder``: the prompt's pass, then one decode step per token), each token picked as the
    readable loop picks it for a prompt alone (``minigpt.serving.pick_token``: the settings' chain in float32,
    then the argmax or a draw from ``rng``), so the tokens are those ``minigpt.generate.stream`` picks from the
    same logits. A step runs only when the caller asks for its token: the text streams, and a run that stops
    early (EOS, a stop string) computes no more.

    >>> from minigpt.fast import FastDecoder
    >>> from minigpt.model import GPTConfig
    >>> model, ids = GPT(GPTConfig.from_preset("tiny")), torch.tensor([[6109, 3626, 6100, 345]])
    >>> len(list(fast_tokens(FastDecoder(model, 1, 7), ids, DecodingSettings(max_new_tokens=3), None)))
    3
    """
    from minigpt.serving import pick_token

    T, new = ids.size(1), s.max_new_tokens
    out = torch.cat([ids, ids.new_full((1, new), PAD_TOKEN_ID)], 1)  # (1, T + new): the prompt, then each token
    logits = decoder.prefill(ids, torch.ones_like(ids), torch.arange(T, device=ids.device).unsqueeze(0))  # (1, V)
    position = torch.full((1, 1), T, device=ids.device)  # (1, 1): where the token fed next sits
    for step in range(new):
        if step:
            logits = decoder.decode_one_token(out[:, T + step - 1 : T + step], position, T + step - 1)
            position += 1
        token = pick_token(logits, out[:, : T + step], step, s, rng)
        out[:, T + step] = token
        yield token


def _warn_about_the_boundary(prompt: str, model: str, allow_special: bool) -> None:
    """One line on stderr when PROMPT ends in a token the training split rarely ends on (minigpt.healing).

    Only for models trained on the shipped corpus (not OpenAI's GPT-2), and only where the corpus is there
    (it ships with the git checkout, not with the installed package).
    """
    if model in HUB_REPOS:
        return
    from minigpt.healing import boundary_warning

    try:
        warning = boundary_warning(encode(prompt, allow_special=allow_special), fix="--token-healing")
    except FileNotFoundError:
        return
    if warning:
        print(f"minigpt generate: warning: {warning}", file=sys.stderr)


def _add_explore(p: argparse.ArgumentParser) -> None:
    from minigpt.explore import DEFAULTS, SETTINGS

    p.description = (
        "Sample STEPS tokens after PROMPT and write one self-contained HTML page (no network, no server) that "
        "replays them: scrub through the steps and move the sliders (repetition penalty, temperature, top-k, "
        "top-p, min-p); the page recomputes each next-token distribution. The settings below are those the "
        "replay samples with and where the sliders start; by default minigpt generate's, temperature 0.8 and "
        "top-k 50. --temperature 0 replays greedy decoding. --watermark samples with the watermark of minigpt "
        "generate --watermark (lefthash) and tints the green tokens."
    )
    p.add_argument("prompt", help="the text to continue")
    p.add_argument("--out", required=True, help="the HTML file to write, e.g. explore.html")
    p.add_argument("--steps", type=int, default=20, help="how many tokens to sample and replay (default 20)")
    _add_model_option(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the replay's draws (default 0)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:1 or mps (default cpu)")
    add_dataclass_arguments(p.add_argument_group("the sliders (minigpt.logits.LogitsSettings)"), LogitsSettings,
                            only=SETTINGS, defaults={name: DEFAULTS[name] for name in ("temperature", "top_k")})
    p.add_argument("--watermark", action="store_true",
                   help="sample with the watermark, as minigpt generate --watermark, and tint the green tokens "
                   "(the page recomputes it; lefthash only)")
    _add_watermark_options(p, "watermark settings, with --watermark (minigpt.logits.WatermarkSettings)")
    p.set_defaults(run=_run_explore)


def _run_explore(args: argparse.Namespace) -> int:
    from minigpt.explore import SETTINGS, check_page_path, check_page_watermark, decoding_settings, export_page

    if EOT_TOKEN in args.prompt:
        raise ValueError(f"the prompt contains {EOT_TOKEN}; remove it from the prompt")
    settings = {name: getattr(args, name) for name in SETTINGS}
    decoding_settings(settings)  # bad options fail here, before the model is loaded
    _check_watermark_flags(args)
    watermark = check_page_watermark(watermark_settings(args) if args.watermark else None)
    check_int("steps", args.steps, 1)
    check_int("seed", args.seed, 0)
    check_page_path(args.out)
    _check_default_model(args.model)
    model = load_model(args.model, device=args.device)
    try:
        path = export_page(
            model, args.prompt, args.out, steps=args.steps, seed=args.seed, model_name=args.model,
            watermark=watermark, **settings,
        )
    except OSError as e:  # a full disk: export_page's one sentence, the old page (if any) left whole
        print(f"minigpt explore: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): {args.steps} steps after {args.prompt!r}")
    return 0


def _add_detect(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Score TEXT for the watermark of minigpt generate --watermark, without the model: rebuild each token's "
        "green list from the tokens before it and the key, count the green tokens and test the count (z-score, "
        "p-value) against the fraction γ that chance gives. Pass the settings the text was generated with, and "
        "leave the prompt out of TEXT (it was not watermarked). Exit status 0 whatever the verdict."
    )
    p.add_argument("text", metavar="TEXT", help="the text to score")
    p.add_argument("--z-threshold", type=float, default=3.0,
                   help="call TEXT watermarked when its z-score is above this (default 3.0)")
    p.add_argument("--ignore-repeated-ngrams", action="store_true",
                   help="score each distinct (context, token) once, so a repeated phrase cannot pile up green tokens")
    _add_watermark_options(p, "watermark settings, those of the generation (minigpt.logits.WatermarkSettings)")
    p.set_defaults(run=_run_detect)


def _run_detect(args: argparse.Namespace) -> int:
    from minigpt.tokenizer import decode
    from minigpt.watermark import detect

    if EOT_TOKEN in args.text:
        raise ValueError(f"TEXT contains {EOT_TOKEN}; remove it (it is a special token, not text)")
    settings = watermark_settings(args)
    ids = encode(args.text)
    if len(ids) <= settings.context_width:  # the library's message would name its parameter, not TEXT
        raise ValueError(f"TEXT must hold more than --context-width={settings.context_width} tokens, to score at "
                         f"least one; got {len(ids)}")
    found = detect(ids, settings, z_threshold=args.z_threshold, ignore_repeated_ngrams=args.ignore_repeated_ngrams)
    seeding = len(ids) - len(found.green)  # the first tokens only seed the first green list
    pieces = [decode([i]) for i in ids]
    marked = pieces[:seeding] + [f"[{p}]" if g else p for p, g in zip(pieces[seeding:], found.green)]
    verdict = (f"watermarked (z > {args.z_threshold:g})" if found.prediction
               else f"not watermarked (z <= {args.z_threshold:g})")
    print(f"tokens, green ones in [brackets] (the first {seeding} only seed the green list):")
    print("".join(marked))
    print(f"scored tokens: {found.num_tokens_scored}")
    chance = f"{settings.greenlist_ratio:g} by chance"
    print(f"green tokens:  {found.num_green_tokens} ({found.green_fraction:.3f}; {chance})")
    print(f"z-score:       {found.z_score:.3f}")
    print(f"p-value:       {found.p_value:.3g}")
    print(f"verdict:       {verdict}")
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    from minigpt.export import GGUF_DTYPES

    p.description = (
        "Write MODEL in the format of another tool. --to hf: a directory OUT that transformers loads offline "
        "with GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained (config.json, "
        "model.safetensors, and GPT-2's tokenizer files made from minigpt's own copy). --to gguf: one file OUT "
        "that llama.cpp runs (architecture gpt2, the tokenizer inside), in f32, f16, q8_0 or q4_0 (--dtype)."
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help=f"a shipped model ({', '.join(shipped_models()) or 'none installed'}), a checkpoint directory, "
        f"a model.safetensors file, or a GPT-2 name to download ({', '.join(HUB_REPOS)})",
    )
    p.add_argument("--to", required=True, choices=["hf", "gguf"],
                   help="the format: hf (Hugging Face transformers) or gguf (llama.cpp)")
    p.add_argument("out", metavar="OUT", help="--to hf: the directory to write, new or empty; --to gguf: the "
                   "file to write, new (either may be replaced with --overwrite)")
    p.add_argument("--dtype", choices=GGUF_DTYPES,
                   help="--to gguf only: f32 (default), or the block matrices and token table in f16, or in "
                        "llama.cpp's 8- and 4-bit blocks q8_0 and q4_0 (32 weights, one f16 scale); the rest f32")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at OUT")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from minigpt.export import check_out_dir, check_out_file, export_gguf, export_hf, recorded_heldout_loss

    if args.model not in shipped_models() and args.model not in HUB_REPOS and not Path(args.model).exists():
        raise FileNotFoundError(
            f"MODEL {args.model!r} is neither a shipped model ({', '.join(shipped_models()) or 'none installed'}), "
            f"nor an existing checkpoint path, nor a GPT-2 name ({', '.join(HUB_REPOS)})"
        )
    name = Path(args.model).stem if Path(args.model).exists() else args.model
    # a bad OUT fails before the model is loaded
    if args.to == "hf":
        if args.dtype is not None:
            raise ValueError(f"--dtype applies to --to gguf only (--to hf writes the model's float32), "
                             f"got --dtype {args.dtype}")
        check_out_dir(args.out, overwrite=args.overwrite)
        model = load_model(args.model)
        try:
            out = export_hf(model, args.out, overwrite=args.overwrite, name=name,
                            heldout_loss=recorded_heldout_loss(args.model))
        except OSError as e:  # a full disk: export_hf's one sentence, nothing left behind
            print(f"minigpt export: error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {out}: run it with transformers.pipeline(\"text-generation\", model={str(out)!r})"
              f"(\"ROMEO:\"), or load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")
        return 0
    check_out_file(args.out, overwrite=args.overwrite)
    model = load_model(args.model)
    try:
        out = export_gguf(model, args.out, dtype=args.dtype or "f32", name=name, overwrite=args.overwrite)
    except OSError as e:  # a full disk: export_gguf's one sentence, no partial file left
        print(f"minigpt export: error: {e}", file=sys.stderr)
        return 1
    # the context must not exceed the model's: llama.cpp's default 512 runs past the position table and aborts
    context = model.config.block_size
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): run it with llama.cpp, "
          f"llama-completion -m {out} -p \"ROMEO:\" -n 100 -c {context}, or in Python "
          f"llama_cpp.Llama({str(out)!r}, n_ctx={context})(\"ROMEO:\", max_tokens=100)")
    return 0


# command: (its one-line help, the function that adds its flags)
COMMANDS = {
    "generate": ("continue a prompt, printing tokens as they are made", _add_generate),
    "train": ("train a GPT on the Shakespeare corpus", _add_train),
    "bench": ("measure decoding speed: no cache, KV cache, fast path, transformers", _add_bench),
    "explore": ("write a page that replays a generation, with the decoding sliders", _add_explore),
    "detect": ("score a text for the watermark of generate --watermark: green tokens, z-score, verdict", _add_detect),
    "export": ("write a model in another tool's format: --to hf (transformers) or --to gguf (llama.cpp)", _add_export),
}


if __name__ == "__main__":
    sys.exit(main())
