"""``minigpt generate`` decodes on the fast path (FastDecoder's C step) and prints the readable loop's text.

Each case runs the command twice on the shipped ``shakespeare`` model, on the fast path and with ``--readable``,
and asserts the same stdout. The two loops compute the logits in float32 in different orders (the C step, torch),
about 1e-5 apart, so each case first checks that no pick it makes is that close to a tie: the greedy top-2 logit
gap, and for a draw, the gap of the exponential race ``torch.multinomial`` runs (the token is argmax p / E with
E ~ Exp(1) drawn from the seeded generator), are at least ``MIN_MARGIN`` at every step.
"""

import pytest
import torch

from minigpt import cli
from minigpt.checkpoint import load_model, shipped_models
from minigpt.cli import main
from minigpt.fast import WEIGHTS, FastDecoder, native
from minigpt.generate import DecodingSettings, cut_at_stop, generate, text_pieces
from minigpt.quantize import int8_kernels_here
from minigpt.tokenizer import EOT_TOKEN, EOT_TOKEN_ID, decode, encode

pytestmark = [
    pytest.mark.skipif("shakespeare" not in shipped_models(), reason="the shipped shakespeare model is not installed"),
    pytest.mark.skipif(not native.available(), reason=f"no C decode step here: {native.unavailable_reason()}"),
]
FAST = "minigpt generate: decoding with the fast path (minigpt.fast.FastDecoder, {}, the C decode step)\n"
MIN_MARGIN = 1e-3  # in log space; the two loops' logits differ by about 1e-5 (tests/test_native.py: atol 1e-4)
NEW = ["--max-new-tokens", "40"]

CASES = {  # name: (prompt, flags)
    "greedy": ("ROMEO:", ["--temperature", "0"]),
    "greedy, EOS and a stop string": ("JULIET:\nO", ["--temperature", "0", "--eos", "--stop", "\n\n"]),
    "the default sampling": ("ROMEO:", ["--seed", "0"]),
    "sampled to EOS": ("Exeunt.\n\nTHE END", ["--seed", "0", "--eos"]),
    "temperature, top-p, min-p": ("KING HENRY:", ["--seed", "7", "--temperature", "1.2", "--top-k", "0",
                                                  "--top-p", "0.9", "--min-p", "0.02"]),
    "penalties, a ban, EOS after min-new-tokens": ("ROMEO:", ["--seed", "3", "--repetition-penalty", "1.3",
                                                              "--no-repeat-ngram-size", "3", "--ban", " love",
                                                              "--eos", "--min-new-tokens", "10"]),
    "the watermark": ("HAMLET:", ["--seed", "4", "--watermark"]),
    "llama.cpp's order": ("ROMEO:", ["--seed", "6", "--order", "llama.cpp", "--top-k", "40", "--top-p", "0.95"]),
}
WEIGHT_CASES = {f"{w}, {kind}": ("ROMEO:", ["--weights", w, *flags]) for w in WEIGHTS if w != "float"
                for kind, flags in (("greedy", ["--temperature", "0"]), ("sampled", ["--seed", "2"]))}
# --activations q8_0 rounds every matrix's input to Q8_0 codes, so where a number sits within float32 rounding of
# a tie between two codes, the two loops (whose float32 sums differ by that much) can round it apart, and one
# code moves the logits by far more than rounding: measured, one such code moved "ROMEO:\n"'s by 0.125, and 40
# greedy tokens moved by up to 0.6. Their picks are compared only where the gap clears twice that, and more.
A8_MIN_MARGIN = 1.5
A8_PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"  # most of its 40 picks clear it


@pytest.fixture(scope="module")
def shakespeare():
    return load_model("shakespeare")


@pytest.fixture(autouse=True)
def one_int8_kernel(monkeypatch):
    """int8 weights' kernel is timed per run ("auto"): on a busy machine two runs could pick two kernels, which
    round differently. The C step runs fbgemm's "dynamic" kernel: pin it, as a CPU that times it fastest would."""
    monkeypatch.setattr(cli, "_int8_kernel", lambda model: "dynamic")


def run(capsys, prompt, flags):
    """stdout and stderr of ``minigpt generate PROMPT FLAGS``."""
    assert main(["generate", prompt, *flags]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def reference(model, prompt, flags):
    """The readable loop's text for these flags, each pick's margin (the smallest), and the model it decoded."""
    args = cli.build_parser("generate").parse_args(["generate", prompt, *flags])
    logits = cli.logits_settings(args)
    int8_kernel = cli._int8_kernel(model) if args.weights == "int8" else None
    model = cli.readable_model(model, args.weights, int8_kernel, activations=args.activations)
    s = DecodingSettings(max_new_tokens=args.max_new_tokens, do_sample=logits.temperature > 0, logits=logits,
                         eos_token_id=EOT_TOKEN_ID if args.eos else None, stop=args.stop)
    out = generate(model, prompt, logits=logits, seed=args.seed, return_distributions=True,
                   **{k: getattr(s, k) for k in ("max_new_tokens", "do_sample", "eos_token_id", "stop")})
    rng = torch.Generator().manual_seed(args.seed) if s.do_sample else None
    margins = []
    for token, probs in zip(out.new_tokens[0], out.distributions):
        scores = probs.log()  # (1, V): the distribution the pick was made from
        if rng is not None:  # multinomial's race: argmax of p / E, E ~ Exp(1) from the same generator
            scores = scores - torch.empty_like(probs).exponential_(1, generator=rng).log()
        top2 = scores[0].topk(2)
        assert top2.indices[0] == token  # the race replayed picks the token the loop picked
        margins.append((top2.values[0] - top2.values[1]).item())
    return out.text, min(margins)


@pytest.mark.parametrize("case", [*CASES, *WEIGHT_CASES])
def test_the_fast_path_prints_the_readable_loops_text(shakespeare, capsys, case):
    prompt, flags = {**CASES, **WEIGHT_CASES}[case]
    flags = [*flags, *NEW]
    args = cli.build_parser("generate").parse_args(["generate", prompt, *flags])
    if args.weights == "int8" and "dynamic" not in int8_kernels_here():
        pytest.skip("the C step's int8 kernel is fbgemm's dynamic one, which this CPU lacks")
    why = cli.readable_reason(args, "dynamic" if args.weights == "int8" else None)
    if why is not None:
        pytest.skip(f"the fast path does not run {args.weights} weights here: {why}")
    text, margin = reference(shakespeare, prompt, flags)
    assert margin >= MIN_MARGIN, f"{case}: a pick is within {margin:.2g} of a tie: choose another seed or prompt"
    fast, said = run(capsys, prompt, [*flags, "-v"])
    assert FAST.format(f"{args.weights} weights") in said
    readable, said = run(capsys, prompt, [*flags, "--readable", "-v"])
    assert (f"minigpt generate: decoding with the readable loop (minigpt.generate.stream, {args.weights} "
            "weights): --readable\n") in said
    assert fast == readable == text.removesuffix(EOT_TOKEN) + "\n"  # the stream does not print an EOS


@pytest.mark.parametrize("case, why", [("greedy, EOS and a stop string", "stop"), ("sampled to EOS", "eos")])
def test_the_cases_reach_eos_and_the_stop_string(shakespeare, case, why):
    """The EOS and stop cases end early, so they test the ending (else they would test nothing more)."""
    prompt, flags = CASES[case]
    args = cli.build_parser("generate").parse_args(["generate", prompt, *flags, *NEW])
    out = generate(shakespeare, prompt, logits=cli.logits_settings(args), seed=args.seed, max_new_tokens=40,
                   do_sample=args.seed is not None, eos_token_id=EOT_TOKEN_ID, stop=args.stop)
    assert out.stopped_by == [why] and len(out.new_tokens[0]) < 40


@pytest.mark.parametrize("weights", ["q8_0", "q4_0"])
def test_with_q8_0_activations_the_fast_path_picks_the_readable_loops_tokens_where_margins_allow(
        shakespeare, capsys, monkeypatch, weights):
    """Greedy: each token the fast path printed is the readable loop's argmax after the tokens before it, at every
    step whose top-2 gap is at least ``A8_MIN_MARGIN`` (at least 10 of the 40 steps have such a gap)."""
    made, fast_tokens = [], cli.fast_tokens
    monkeypatch.setattr(cli, "fast_tokens", lambda *a: (made.append(t) or t for t in fast_tokens(*a)))
    flags = ["--weights", weights, "--activations", "q8_0", "--temperature", "0", *NEW]
    fast, said = run(capsys, A8_PROMPT, [*flags, "-v"])
    assert FAST.format(f"{weights} weights, q8_0 activations") in said
    _, said = run(capsys, A8_PROMPT, [*flags, "--readable", "-v"])
    assert ("minigpt generate: decoding with the readable loop (minigpt.generate.stream, "
            f"{weights} weights, q8_0 activations): --readable\n") in said
    prompt = encode(A8_PROMPT)
    model = cli.readable_model(shakespeare, weights, activations="q8_0")
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + made[:-1]]))[0, len(prompt) - 1 :]  # (40, V): each step's logits
    top2 = logits.topk(2)
    clear = top2.values[:, 0] - top2.values[:, 1] >= A8_MIN_MARGIN  # (40,)
    assert top2.indices[clear, 0].tolist() == torch.tensor(made)[clear].tolist()
    assert clear.sum() >= 10, "too few picks clear the margin to test: choose another prompt"
    assert fast == decode(encode(A8_PROMPT) + made) + "\n"


def test_the_activations_reach_the_fast_path(capsys, monkeypatch):
    built, init = [], FastDecoder.__init__
    monkeypatch.setattr(FastDecoder, "__init__", lambda self, *a, **kw: built.append(kw) or init(self, *a, **kw))
    run(capsys, "ROMEO:", ["--weights", "q4_0", "--activations", "q8_0", "--temperature", "0", "--max-new-tokens", "3"])
    run(capsys, "ROMEO:", ["--weights", "q4_0", "--temperature", "0", "--max-new-tokens", "3"])
    assert [(kw["weights"], kw["activations"]) for kw in built] == [("q4_0", "q8_0"), ("q4_0", "float32")]


def test_the_fast_path_says_nothing_unless_asked(capsys):
    out, err = run(capsys, "ROMEO:", ["--temperature", "0", *NEW])
    assert err == "" and out.startswith("ROMEO:")
    _, err = run(capsys, "ROMEO:", ["--temperature", "0", "--max-new-tokens", "3", "-v"])
    first, second = err.splitlines()
    assert first + "\n" == FAST.format("float weights")
    assert second.startswith("minigpt generate: 3 new tokens in ") and " tokens/s), the first after " in second


@pytest.mark.parametrize("flags, why", [
    (["--token-healing"], "--token-healing re-writes the prompt's end, which only the readable loop does"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: no token to decode"),
])
def test_the_settings_only_the_readable_loop_has(capsys, monkeypatch, flags, why):
    monkeypatch.setattr(FastDecoder, "__init__", lambda *a, **kw: pytest.fail("the fast path was built"))
    _, err = run(capsys, "ROMEO:", ["--temperature", "0", "--max-new-tokens", "5", *flags, "-v"])
    assert err.splitlines()[0] == f"minigpt generate: decoding with the readable loop (minigpt.generate.stream, float " \
                                  f"weights): {why}"


def test_without_the_c_step_float_falls_back_quietly(shakespeare, capsys, monkeypatch):
    monkeypatch.setattr(native, "unavailable_reason", lambda: "no C compiler (cc, gcc, clang) on the PATH")
    monkeypatch.setattr(FastDecoder, "__init__", lambda *a, **kw: pytest.fail("the fast path was built"))
    out, err = run(capsys, "ROMEO:", ["--temperature", "0", *NEW])
    assert err == "" and out == generate(shakespeare, "ROMEO:", max_new_tokens=40).text + "\n"
    _, err = run(capsys, "ROMEO:", ["--temperature", "0", "--max-new-tokens", "2", "-v"])
    assert err.splitlines()[0] == ("minigpt generate: decoding with the readable loop (minigpt.generate.stream, float "
                                   "weights): the C decode step cannot run here: no C compiler (cc, gcc, clang) on "
                                   "the PATH")


def test_a_gpu_decodes_with_the_readable_loop():
    args = cli.build_parser("generate").parse_args(["generate", "Hi"])
    args.device = torch.device("cuda")  # as --device cuda parses where CUDA is there
    assert cli.readable_reason(args) == "the C decode step runs on CPU, got --device cuda"


def test_a_format_the_fast_path_lacks_decodes_rounded_weights_with_the_readable_loop(shakespeare, capsys,
                                                                                    monkeypatch):
    from minigpt.fast import options
    from minigpt.quantize import round_weights

    monkeypatch.setattr(options, "WEIGHTS", ("float", "int8"))  # as before the fast path had 16-bit weights
    out, err = run(capsys, "ROMEO:", ["--temperature", "0", "--weights", "fp16", "-v", *NEW])
    assert err.splitlines()[0].startswith("minigpt generate: decoding with the readable loop (minigpt.generate."
                                          "stream, fp16 weights): the fast path cannot decode --weights fp16 here: ")
    assert out == generate(round_weights(shakespeare, "fp16"), "ROMEO:", max_new_tokens=40).text + "\n"


def test_a_run_that_stops_early_computes_no_more_steps(shakespeare, capsys, monkeypatch):
    steps = []
    decode_one_token = FastDecoder.decode_one_token
    monkeypatch.setattr(FastDecoder, "decode_one_token", lambda self, *a: steps.append(1) or decode_one_token(self, *a))
    run(capsys, "JULIET:\nO", [*CASES["greedy, EOS and a stop string"][1], *NEW])
    made = generate(shakespeare, "JULIET:\nO", max_new_tokens=40, eos_token_id=EOT_TOKEN_ID, stop="\n\n").new_tokens[0]
    assert len(steps) == len(made) - 1 < 39  # a step per token after the first (the prompt's pass gives that one)


def test_a_long_prompt_is_cropped_as_the_readable_loop_crops_it(capsys):
    prompt = "ROMEO:\nI love thee, and I love thee not.\n" * 20  # 280 tokens: more than the context holds
    flags = ["--temperature", "0", *NEW]
    with pytest.warns(UserWarning, match="keeping the last 216 prompt tokens"):
        fast, _ = run(capsys, prompt, flags)
    with pytest.warns(UserWarning, match="keeping the last 216 prompt tokens"):
        readable, _ = run(capsys, prompt, [*flags, "--readable"])
    assert fast == readable


CAFE = encode("A caf") + [127, 102] + encode(" naïve")  # "é" split over two byte tokens (0xC3, 0xA9)


@pytest.mark.parametrize("tokens, stops, pieces", [
    (encode("Fair is foul.\n\nHover"), ["\n\n"], ["Fair", " is", " foul", ".", "", ""]),  # "\n" waits, then the stop
    (encode("Fair is foul") + [EOT_TOKEN_ID] + encode(" never"), None, ["Fair", " is", " foul", ""]),  # EOS: not printed
    (CAFE, ["ïv", "xyz"], ["A", " caf", "", "é", " na"]),  # a split character waits for its end
    (CAFE + encode(" is"), ["e!"], ["A", " caf", "", "é", " naïv", "e is"]),  # "e" might start "e!": it waits
])
def test_text_pieces_are_the_readable_streams_pieces(tokens, stops, pieces):
    s = DecodingSettings(max_new_tokens=len(tokens), eos_token_id=EOT_TOKEN_ID, stop=stops)
    assert [piece for _, piece in text_pieces(iter(tokens), s)] == pieces
    whole = decode(tokens[: tokens.index(EOT_TOKEN_ID)] if EOT_TOKEN_ID in tokens else tokens)
    assert "".join(pieces) == cut_at_stop(whole, stops or [])


@pytest.mark.parametrize("readable", [[], ["--readable"]])
def test_a_block_format_needs_rows_of_whole_blocks(tmp_path, capsys, readable):
    from minigpt.checkpoint import save_checkpoint
    from minigpt.model import GPT, GPTConfig

    model = save_checkpoint(GPT(GPTConfig.from_preset("tiny", n_embd=48, n_head=2)), tmp_path / "narrow")
    assert main(["generate", "Hi", "--model", str(model), "--weights", "q4_0", *readable]) == 2
    assert capsys.readouterr().err == ("minigpt generate: error: --weights q4_0 stores blocks of 32 numbers along "
                                       "each matrix row, so it needs n_embd a multiple of 32; this model has "
                                       "n_embd=48: use float, int8, fp16 or bf16\n")
