"""fp16, bf16, q8_0 and q4_0 weights in the C decode step compute ``minigpt.quantize.round_weights(model, fmt)``.

A format means the model with its block matrices and token table rounded through it (BRIEF: every path is
checked against ``round_weights``). The C step keeps the weights in the format and widens them in registers;
activations stay float32, so it differs from the float32 model of the rounded values only by float32's
rounding (another order of sums). The token tests make that difference unable to flip a token: the
reference's top-2 margins, computed in float64, are checked to be far above it.

With ``activations="q8_0"`` (llama.cpp's arithmetic) each matrix's inputs are rounded to Q8_0 first, bit for
bit as ``quantize_q8_0``, and the products are integer sums: the reference is then
``round_weights(model, fmt, activations="q8_0")``.
"""

import pytest
import torch
from test_native import needs_native, peaked_model

from minigpt import quantize
from minigpt.fast import ACTIVATIONS, WEIGHTS, FastDecoder, UnsupportedOptions, native
from minigpt.fast.decoder import stored_as
from minigpt.fast.options import choose_matmul
from minigpt.generate import PAD_TOKEN_ID, generate
from minigpt.model import GPT, position_ids_from_mask
from minigpt.quantize import (
    BLOCK_FORMATS,
    dequantize_q4_0,
    dequantize_q8_0,
    quantize_q4_0,
    quantize_q8_0,
    round_matrix,
    round_weights,
)

FORMATS = ("fp16", "bf16", "q8_0", "q4_0")
N_NEW = 12


@pytest.fixture(scope="module")
def model():
    return peaked_model()  # the C step's own tests' model: peaked, varied next-token distributions


def prompts(batch):
    """``batch`` prompts of 9 tokens; with 3, the second and third left-padded by 4 and 1."""
    torch.manual_seed(1)
    ids = torch.randint(0, 1000, (batch, 9))
    mask = torch.ones_like(ids)
    if batch == 3:
        mask[1, :4] = 0
        mask[2, :1] = 0
    return ids.masked_fill(mask == 0, PAD_TOKEN_ID % 1000), mask


def test_the_formats_are_weights_a_decoder_takes():
    assert WEIGHTS == ("float", "int8", *FORMATS)


@needs_native
@pytest.mark.parametrize("fmt", FORMATS)
def test_matrices_are_stored_in_the_format_with_the_rounded_values(model, fmt):
    """Q8_0 and Q4_0: GGUF's 34- and 18-byte blocks, which stand for round_weights' values."""
    w = model.transformer.h[0].mlp.c_fc.weight  # (512, 128)
    stored = stored_as(w, fmt)
    expected = round_weights(model, fmt).transformer.h[0].mlp.c_fc.weight
    if fmt in ("fp16", "bf16"):
        assert stored.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[fmt]
        assert torch.equal(stored.float(), expected)
        return
    per_block = {"q8_0": 34, "q4_0": 18}[fmt]
    assert stored.dtype == torch.uint8 and stored.shape == (512, 128 // 32 * per_block)
    blocks = stored.view(512, 4, per_block)
    scale = blocks[:, :, :2].contiguous().view(torch.float16).view(512, 4)
    if fmt == "q8_0":
        q = blocks[:, :, 2:].contiguous().view(torch.int8).reshape(512, 128)
        assert torch.equal(dequantize_q8_0(scale, q), expected)
        assert torch.equal(quantize_q8_0(w)[1], q)
    else:
        packed = blocks[:, :, 2:]  # byte j: code j (low half) and code j + 16 (high half) of its block
        q = torch.cat([packed & 15, packed >> 4], dim=2).reshape(512, 128)
        assert torch.equal(dequantize_q4_0(scale, q), expected)
        assert torch.equal(quantize_q4_0(w)[1], q)


@needs_native
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_lookup_reads_the_rounded_table(model, fmt):
    decoder = FastDecoder(model, max_batch_size=1, max_len=16, weights=fmt)
    assert decoder.matmul == "native" and decoder.wte.dtype == torch.float32
    assert torch.equal(decoder.wte, round_weights(model, fmt).transformer.wte.weight)


def margins(model, ids, mask, T):
    """The float64 reference's top-1 minus top-2 logit at each new position of ``ids`` (B, T + new), and its picks."""
    with torch.no_grad():
        logits = model.double()(ids.clone(), attention_mask=mask.clone(), position_ids=position_ids_from_mask(mask))
    logits = logits[:, T - 1 : -1]
    top = logits.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1], logits.argmax(dim=-1)


@needs_native
@pytest.mark.parametrize("fmt, activations", [*((fmt, "float32") for fmt in FORMATS),
                                              *((fmt, "q8_0") for fmt in BLOCK_FORMATS)])
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_tokens_are_the_rounded_models(model, fmt, activations, batch):
    ids, mask = prompts(batch)
    rounded = round_weights(model, fmt, activations=activations)
    expected = generate(rounded, ids, attention_mask=mask, max_new_tokens=N_NEW).ids
    decoder = FastDecoder(model, max_batch_size=3, max_len=32, weights=fmt, activations=activations)
    assert decoder.activations == activations
    out = decoder.generate(ids, mask, max_new_tokens=N_NEW)
    assert torch.equal(out.ids, expected)
    # not luck: in float64 the same tokens win, each by far more than float32's rounding (~1e-5 here) could move
    margin, picks = margins(rounded, out.ids, out.attention_mask, ids.shape[1])
    assert torch.equal(picks, out.ids[:, ids.shape[1]:])
    assert margin.min() > 1e-3


@needs_native
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_step_gives_the_float32_steps_logits_on_the_rounded_weights(model, fmt):
    """One decode step after the same prompt: the format's C step against the float32 C step of round_weights'
    matrices. Both sum float32 products; only the order differs, so they agree to float32 rounding of sums
    of a few hundred products of size ~1 (logits of size ~10): 1e-4."""
    steps = [one_step(model, fmt), one_step(model, fmt, reference=True)]
    assert steps[1].abs().max() > 3  # logits of size ~10
    torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=1e-4)


def one_step(model, fmt, reference=False, activations="float32"):
    """Logits of one decode step after the 3 padded prompts, the prompt run through the C step (same cache)."""
    ids, mask = prompts(3)
    positions = position_ids_from_mask(mask)
    if reference:  # the float32 C step over round_weights' matrices
        decoder = FastDecoder(round_weights(model, fmt), max_batch_size=3, max_len=32, matmul="native")
    else:
        decoder = FastDecoder(model, max_batch_size=3, max_len=32, weights=fmt, activations=activations)
    decoder.key_ok[:3, 0, 0, :9] = mask.bool()
    decoder.padded = True
    with torch.inference_mode():
        decoder._prefill_in_c(ids, positions)
        return decoder.native_step(torch.tensor([[3], [5], [7]]), positions[:, -1:] + 1, 9, decoder.key_ok[:3, 0, 0])


@needs_native
@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_a_step_with_q8_0_activations_gives_the_float64_models_logits(model, fmt):
    """One decode step with the inputs rounded to Q8_0, against round_weights(..., activations="q8_0") run in
    float64 over the prompt and the new token: the same codes (the inputs of both differ by float32's rounding,
    far from moving a code here), summed in float64 against integer sums in float32: within 1e-4."""
    step = one_step(model, fmt, activations="q8_0")
    ids, mask = prompts(3)
    ids, mask = torch.cat([ids, torch.tensor([[3], [5], [7]])], 1), torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
    with torch.no_grad():
        reference = round_weights(model, fmt, activations="q8_0").double()(
            ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))[:, -1]
    assert reference.abs().max() > 3
    torch.testing.assert_close(step.double(), reference, rtol=0, atol=1e-4)
    assert (step - one_step(model, fmt)).abs().max() > 1e-2  # the rounding of the inputs counts


@needs_native
@pytest.mark.parametrize(("fmt", "activations"), [*((f, "float32") for f in FORMATS),
                                                  *((f, "q8_0") for f in BLOCK_FORMATS)])
@pytest.mark.parametrize("batch", [1, 3])  # 3: two rows left-padded
def test_a_prompts_pass_is_its_tokens_steps_one_by_one(model, fmt, activations, batch):
    """The C step takes a prompt's tokens in one call, each computed as a step of its own computes it: the
    logits and every layer's cache bit for bit those of one call per position (how C-only formats ran a
    prompt before), a padded position seeing itself (see ``FastDecoder._prefill_in_c``)."""
    ids, mask = prompts(batch)
    positions = position_ids_from_mask(mask)
    decoders = [FastDecoder(model, max_batch_size=3, max_len=32, weights=fmt, activations=activations) for _ in "ab"]
    for decoder in decoders:
        decoder.key_ok[:batch, 0, 0, :9] = mask.bool()
        decoder.padded = batch == 3
    together, alone = decoders
    key_ok = alone.key_ok[:batch, 0, 0]
    with torch.inference_mode():
        logits = together._prefill_in_c(ids, positions)
        for t in range(9):
            seen = key_ok.clone() if alone.padded else None
            if seen is not None:
                seen[:, t] = True
            one_by_one = alone.native_step(ids[:, t : t + 1], positions[:, t : t + 1], t, seen)
    assert torch.equal(logits, one_by_one)
    assert all(torch.equal(a, b) for a, b in zip(together.cache, alone.cache))
    assert together.cache[0][:batch, :9].abs().sum() > 0 and together.cache[0][:, 9:].abs().sum() == 0


@needs_native
@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
@pytest.mark.parametrize("batch", [1, 3, 6])  # 6: a group of 4 rows of the batch, then one of 2
def test_a_matrix_over_q8_0_inputs_is_the_float64_product_of_the_codes(fmt, batch):
    """The C step's product of one matrix: its inputs' Q8_0 codes (bit for bit quantize_q8_0's, tested below)
    times the weights' codes, per block an exact integer sum times both scales, summed in float32: within
    float32's rounding of the float64 product of the values the codes stand for."""
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(37, 512, generator=g), torch.randn(batch, 512, generator=g) * 3
    got = native.matvec_format(stored_as(w, fmt), fmt, x, "q8_0")
    expected = round_matrix(x, "q8_0").double() @ round_matrix(w, fmt).double().T
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-5 * expected.abs().max().item())
    assert (got.double() - x.double() @ round_matrix(w, fmt).double().T).abs().max() > 1e-3  # x was rounded


@needs_native
@pytest.mark.parametrize(("fmt", "activations"), [("f32", "float32"), *((f, "float32") for f in FORMATS),
                                                  *((f, "q8_0") for f in BLOCK_FORMATS)])
@pytest.mark.parametrize("cols", [64, 1024])
def test_a_rows_product_does_not_depend_on_the_threads_or_the_batch(fmt, activations, cols):
    """Each output is one row's sum in one fixed order: bit for bit the same whichever thread's share holds
    its row (37 rows: shares of 37, 19 or 18, 13 or 12, so a group of ROW_GROUP rows starts anywhere and a
    share's last rows are taken one at a time), and at batch 1 as in a batch of 2."""
    g = torch.Generator().manual_seed(5)
    w, x = torch.randn(37, cols, generator=g), torch.randn(2, cols, generator=g)
    stored = w if fmt == "f32" else stored_as(w, fmt)
    threads = torch.get_num_threads()
    try:
        alone = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            alone.append(native.matvec_format(stored, fmt, x[:1], activations))
        batch = native.matvec_format(stored, fmt, x, activations)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone[0], alone[1]) and torch.equal(alone[0], alone[2])
    assert torch.equal(alone[0][0], batch[0])
    values = w if fmt == "f32" else round_matrix(w, fmt)
    inputs = round_matrix(x[:1], "q8_0") if activations == "q8_0" else x[:1]
    torch.testing.assert_close(alone[0].double(), inputs.double() @ values.double().T, rtol=0, atol=1e-4)


def q8_0_edges():
    """Blocks (rows of 32) at the edges of Q8_0's rounding: ties, zeros, subnormals, huge values."""
    below_half = torch.nextafter(torch.tensor(0.5), torch.tensor(0.0)).item()
    ties = torch.tensor([127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -126.5, below_half, -below_half] + [0.0] * 23)  # d = 1
    quarter = torch.tensor([31.75, 0.625, -0.625, 0.375, 0.125, -0.125] + [0.0] * 26)  # d = 0.25: x * 4 ties
    # ties only once x * (1/d) is rounded to float32: the exact product is just below k + 1/2 (one FMA, which
    # skips that rounding, would round them down)
    inv = 1 / (torch.tensor(1.2345678) / 127)
    k = (torch.arange(1, 127) + 0.5).repeat(3)
    near = (k / inv).view(3, -1)
    near = torch.stack([torch.nextafter(near[0], torch.tensor(0.0)), near[1], torch.nextafter(near[2], torch.tensor(9.0))])
    near = near.flatten()
    rounded_ties = near[(near * inv == k) & (near.double() * inv.double() < k.double())][:31]
    assert len(rounded_ties) == 31
    rows = [ties, quarter, torch.zeros(32), -ties, torch.cat([torch.tensor([1.2345678]), rounded_ties])]
    g = torch.Generator().manual_seed(4)
    for amax in (1e-36, 1e-30, 1e-9, 6.1e-5 * 127, 1e-3, 65504 * 127, 65520 * 127, 3e38):
        row = (torch.rand(32, generator=g) * 2 - 1) * amax  # scales subnormal in float32 (1e-36), in float16, huge
        row[0] = amax
        rows.append(row)
    tiny = torch.full((32,), 1e-40)  # float32 subnormals among normal numbers: codes 0
    tiny[0] = 1.0
    rows.append(tiny)
    return torch.stack(rows)


@needs_native
def test_the_c_steps_rounding_to_q8_0_is_quantize_q8_0s_bit_for_bit():
    g = torch.Generator().manual_seed(5)
    random = torch.randn(200, 96, generator=g) * torch.logspace(-20, 20, 200)[:, None]
    for x in (random, q8_0_edges()):
        scale, codes = native.quantize_q8_0(x)
        expected_scale, expected_codes = quantize_q8_0(x)
        assert torch.equal(codes, expected_codes)
        assert torch.equal(scale.view(torch.int16), expected_scale.view(torch.int16))  # bits: infinities too
    edges = q8_0_edges()
    scale, codes = native.quantize_q8_0(edges)
    products = edges[4, 1:] * (1 / (edges[4, 0] / 127))  # k + 1/2 in float32, a little less exactly
    assert (products == products.floor() + 0.5).all() and torch.equal(codes[4, 1:].float(), products + 0.5)
    assert codes[0, :9].tolist() == [127, 3, -3, 1, -1, 2, -127, 0, 0]  # halves away from zero
    assert codes[1, :6].tolist() == [127, 3, -3, 2, 1, -1]
    assert scale[10].item() == 65504 and scale[11].item() == float("inf")  # 65520 ties to even: infinity
    assert 0 < scale[9].item() < 6.1e-5 and scale[5].item() == 0  # a float16 subnormal scale; one rounded to 0
    assert codes[5, 0] == 127 and codes[-1].tolist() == [127] + [0] * 31


@pytest.mark.parametrize("weights, activations, message", [
    ("fp16", "q8_0", "activations='q8_0' needs weights 'q8_0' or 'q4_0' (GGUF's blocks, as llama.cpp), "
                     "got weights='fp16'"),
    ("float", "q8_0", "activations='q8_0' needs weights 'q8_0' or 'q4_0' (GGUF's blocks, as llama.cpp), "
                      "got weights='float'"),
    ("q4_0", "int8", "activations must be one of float32, q8_0, got 'int8'"),
])
def test_q8_0_activations_need_block_weights(model, weights, activations, message):
    with pytest.raises(ValueError) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, weights=weights, activations=activations)
    assert str(e.value) == message
    assert ACTIVATIONS is quantize.ACTIVATIONS


@needs_native
@pytest.mark.parametrize("fmt", FORMATS)
def test_subnormal_weights_widen_to_their_values(model, fmt):
    """Weights below float16's smallest normal (6.1e-5) are float16 subnormals (and Q8_0 scales of such blocks
    too): layer 0's MLP gets them, scaled back up by its output matrix, so they move the logits."""
    tiny = GPT(model.config).eval()
    tiny.load_state_dict(model.state_dict())
    with torch.no_grad():
        tiny.transformer.h[0].mlp.c_fc.weight.mul_(1e-4)
        tiny.transformer.h[0].mlp.c_fc.bias.zero_()
        tiny.transformer.h[0].mlp.c_proj.weight.mul_(1e3)
    rounded = round_weights(tiny, fmt).transformer.h[0].mlp.c_fc.weight
    if fmt == "fp16":
        assert ((rounded.abs() < 6.1e-5) & (rounded != 0)).float().mean() > 0.3
    step, expected = one_step(tiny, fmt), one_step(tiny, fmt, reference=True)
    torch.testing.assert_close(step, expected, rtol=0, atol=1e-4)
    assert (expected - one_step(model, fmt, reference=True)).abs().max() > 0.1  # the tiny weights count


@needs_native
def test_the_prompt_runs_through_the_c_step_in_one_call(model, monkeypatch):
    decoder = FastDecoder(model, max_batch_size=3, max_len=32, weights="q4_0")
    calls = []
    step = decoder.native_step
    monkeypatch.setattr(decoder, "native_step", lambda *args: calls.append((args[0].shape, args[2])) or step(*args))
    decoder.generate(*prompts(3), max_new_tokens=3)
    assert calls == [((3, 9), 0), ((3, 1), 9), ((3, 1), 10)]  # the 9 prompt positions at once, then 2 steps


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_formats_run_on_cpu_only(fmt):
    with pytest.raises(UnsupportedOptions) as e:
        choose_matmul("auto", torch.device("cuda"), weights=fmt)
    assert str(e.value) == f"weights='{fmt}': {fmt} weights run on CPU only, got device 'cuda'"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype=torch.float64), "weights='{fmt}': the C decode step computes in float32, got dtype=torch.float64"),
    (dict(compile=True), "weights='{fmt}': {fmt} weights cannot be compiled (the C decode step is eager and reads "
                         "the sliced cache (compile=False, static=False))"),
    (dict(static=True), "weights='{fmt}': {fmt} weights need the sliced cache (the C decode step is eager and reads "
                        "the sliced cache (compile=False, static=False))"),
    (dict(matmul="blas"), "weights='{fmt}': {fmt} weights are multiplied by the C decode step only "
                          "(matmul='auto' or 'native'), got matmul='blas'"),
])
def test_what_the_formats_cannot_run_with_is_refused(model, fmt, kwargs, message):
    with pytest.raises(UnsupportedOptions) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, weights=fmt, **kwargs)
    assert str(e.value) == message.format(fmt=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_the_c_step_the_formats_are_refused(model, monkeypatch, fmt):
    monkeypatch.setattr(native, "unavailable_reason", lambda: "no C compiler found")
    with pytest.raises(UnsupportedOptions) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, weights=fmt)
    assert str(e.value) == (f"weights='{fmt}': {fmt} weights need the C decode step (they have no torch step), "
                            "which cannot run here: no C compiler found")
