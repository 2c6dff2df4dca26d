"""GGUF's Q8_0 and Q4_0 in torch: bit for bit what the `gguf` package's reference quantizers write, and the model a
format means (round_weights)."""

import numpy as np
import pytest
import torch

from minigpt.model import GPT, GPTConfig
from minigpt.quantize import (
    BLOCK_SIZE,
    BYTES_PER_WEIGHT,
    WEIGHT_FORMATS,
    dequantize_q4_0,
    dequantize_q8_0,
    gguf_blocks,
    is_rounded,
    pack_q4_0,
    quantize_q4_0,
    quantize_q8_0,
    round_matrix,
    round_weights,
)

gguf = pytest.importorskip("gguf")
QTYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}
QUANTIZE = {"q8_0": quantize_q8_0, "q4_0": quantize_q4_0}
DEQUANTIZE = {"q8_0": dequantize_q8_0, "q4_0": dequantize_q4_0}


def reference(w: torch.Tensor, fmt: str) -> np.ndarray:
    """gguf's bytes for w (rows, n): uint8 (rows, n // 32 * bytes per block)."""
    with np.errstate(over="ignore"):  # a scale beyond float16's range becomes inf, as in llama.cpp
        return gguf.quants.quantize(w.numpy(), QTYPES[fmt])


def assert_same_as_gguf(w: torch.Tensor, fmt: str) -> None:
    """Our bytes are gguf's, and our dequantized floats are gguf's dequantized floats, bit for bit."""
    ours = gguf_blocks(*QUANTIZE[fmt](w), fmt)
    expected = reference(w.float(), fmt)
    assert ours.dtype == torch.uint8 and ours.shape == expected.shape
    assert np.array_equal(ours.numpy(), expected)
    back = DEQUANTIZE[fmt](*QUANTIZE[fmt](w))
    assert np.array_equal(back.numpy().view(np.uint32), gguf.quants.dequantize(expected, QTYPES[fmt]).view(np.uint32))


def edge_blocks() -> torch.Tensor:
    """One row per block, each an edge case of the formulas (16 blocks, 32 values each)."""
    g = torch.Generator().manual_seed(1)
    rows = [
        torch.zeros(32),  # all zeros: d = 0, and 1/d must be taken as 0, not inf
        torch.full((32,), -0.0),
        torch.tensor([127.0, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5] + [0.0] * 25),  # Q8_0 ties: x/d exactly k + 1/2
        torch.tensor([127.0, 0.49999997, -0.49999997, 1.4999999, 2.5000002] + [0.0] * 27),  # next to the ties
        torch.tensor([-8.0, 0.5, -0.5, 1.5, -1.5, 7.0, 7.5, -7.5] + [0.0] * 24),  # Q4_0 ties: x/d + 8.5 whole
        torch.tensor([-3.0] + [2.9, -2.5, 1.0] * 10 + [0.0]),  # the extreme is negative
        torch.tensor([-4.0, 4.0, 3.99, -3.99] + [1.0] * 28),  # -4 and 4 tie in size: the first wins, 4 clips to 15
        torch.tensor([4.0, -4.0, 3.99, -3.99] + [1.0] * 28),  # ... and the other way round
        torch.tensor([-2.0] + [0.25] * 31),  # the extreme maps to code 0, i.e. exactly -8 * d
        # a block where a fused multiply-add (x * id + 8.5 rounded once) gives code 2, gguf's two roundings 3
        torch.tensor([2.3658499717712402, 1.6265219449996948] + [0.0] * 30),
        torch.randn(32, generator=g) * 60_000,  # huge: the scale stays within float16 (max 65,504 * 127)
        torch.randn(32, generator=g) * 1e-5,  # tiny: the float16 scale is subnormal
        torch.randn(32, generator=g) * 1e-9,  # tinier: the float16 scale rounds to 0
        torch.randn(32, generator=g) * 1e-30,  # float32 still computes the codes
        torch.tensor([1.0] * 31 + [-1.0]),  # the extreme is last
        torch.linspace(-1, 1, 32),
    ]
    return torch.stack(rows)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_edge_blocks_are_bit_for_bit_gguf(fmt):
    assert_same_as_gguf(edge_blocks(), fmt)


def test_the_fused_multiply_add_block_is_where_rounding_twice_matters():
    """The case the Q4_0 edge block pins: one rounding (float64 then float32) would give another code."""
    x, extreme = np.float32(1.6265219449996948), np.float32(2.3658499717712402)
    inverse = np.float32(1) / (extreme / np.float32(-8))
    twice = np.trunc(x * inverse + np.float32(8.5))
    once = np.trunc(np.float32(np.float64(x) * np.float64(inverse) + 8.5))
    assert (twice, once) == (3, 2)
    assert quantize_q4_0(edge_blocks())[1][9, 1] == 3


def test_huge_values_give_an_infinite_scale_as_gguf_does():
    w = torch.tensor([[1e30] + [1.0] * 31])  # 1e30 / 127 is beyond float16
    for fmt in ("q8_0", "q4_0"):
        scale, q = QUANTIZE[fmt](w)
        assert scale.isinf().all()
        assert np.array_equal(gguf_blocks(scale, q, fmt).numpy(), reference(w, fmt))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("shape, spread", [((1, 32), 1.0), ((3, 96), 0.02), ((37, 256), 3.0), ((300, 768), 0.1)])
def test_random_matrices_are_bit_for_bit_gguf(fmt, shape, spread):
    g = torch.Generator().manual_seed(shape[0])
    # rows of very different sizes, and an outlier per row: blocks near it get a large scale, the others not
    w = torch.randn(shape, generator=g) * spread * torch.logspace(-2, 2, shape[0])[:, None]
    w[:, 5] *= 40
    assert_same_as_gguf(w, fmt)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_other_float_dtypes_and_layouts_quantize_their_float32_values(fmt):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 96, generator=g, dtype=torch.float64)
    assert_same_as_gguf(w, fmt)  # gguf rounds float64 to float32 first, as we do
    assert_same_as_gguf(w.float().bfloat16(), fmt)
    transposed = torch.randn(64, 64, generator=g).T  # not contiguous
    assert torch.equal(gguf_blocks(*QUANTIZE[fmt](transposed), fmt), gguf_blocks(*QUANTIZE[fmt](transposed.contiguous()), fmt))


def test_codes_and_scales_by_hand():
    w = torch.cat([torch.arange(32.0) - 16, torch.zeros(32)])[None]  # two blocks
    scale, q = quantize_q8_0(w)
    assert scale.dtype == torch.float16 and q.dtype == torch.int8 and q.shape == (1, 64)
    assert scale.tolist() == [[torch.tensor(16 / 127).half().item(), 0.0]]
    assert q[0, :4].tolist() == [-127, -119, -111, -103] and q[0, 32:].eq(0).all()
    scale, q = quantize_q4_0(w)
    assert scale.tolist() == [[2.0, 0.0]] and q.dtype == torch.uint8
    # x / 2 + 8.5 truncated: -16 -> 0, -15 -> 1 (1.0), -14 -> 1 (1.5), ..., 14 -> 15 (15.5), 15 -> 15 (16.0 clipped)
    assert q[0, :32].tolist() == [0] + [c for c in range(1, 16) for _ in (0, 1)] + [15]
    assert q[0, 32:].eq(8).all()  # zeros: code 8, which stands for 0
    assert dequantize_q4_0(scale, q)[0, :3].tolist() == [-16.0, -14.0, -14.0]


def test_pack_q4_0_pairs_code_j_with_code_j_plus_16():
    q = torch.arange(64, dtype=torch.uint8)[None] % 16  # two blocks
    packed = pack_q4_0(q)
    assert packed.shape == (1, 32)
    # block 0: byte j = code j | code (j + 16) << 4, and code j + 16 = code j here (both j % 16)
    assert packed[0, :16].tolist() == [j | j << 4 for j in range(16)]
    q = torch.zeros(1, 32, dtype=torch.uint8)
    q[0, 16] = 15  # the first code of the second half of the block: the high nibble of byte 0
    assert pack_q4_0(q)[0].tolist() == [0xF0] + [0] * 15


def test_the_bytes_per_weight_are_the_block_sizes():
    for fmt in ("q8_0", "q4_0"):
        blocks = gguf_blocks(*QUANTIZE[fmt](torch.ones(2, 64)), fmt)
        assert blocks.shape[1] / 64 == BYTES_PER_WEIGHT[fmt] == gguf.GGML_QUANT_SIZES[QTYPES[fmt]][1] / BLOCK_SIZE


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_the_rounding_error_is_within_half_a_step(fmt):
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(3))
    scale, q = QUANTIZE[fmt](w)
    step = scale.float().abs().repeat_interleave(BLOCK_SIZE, dim=1)
    error = (DEQUANTIZE[fmt](scale, q) - w).abs()
    # half a step, plus what rounding the scale to float16 moves the largest code (127 or 8 steps) by
    largest = 127 if fmt == "q8_0" else 8
    half = step * (0.5 + largest * 2**-11) + 1e-7
    if fmt == "q8_0":
        assert (error <= half).all()
    else:
        # Q4_0's codes reach -8 steps but only +7: a value beyond 7.5 steps on the far side of the extreme
        # is clipped to code 15, up to one whole step off (the price of a lopsided range)
        clipped = q == 15
        assert (error[~clipped] <= half[~clipped]).all() and (error[clipped] <= 2 * half[clipped]).all()
        assert (error[clipped] > half[clipped]).any()  # it happens on random weights


@pytest.mark.parametrize("fmt, tensor_type", [("fp16", "F16"), ("bf16", "BF16")])
def test_16_bit_rounding_is_ggufs(fmt, tensor_type):
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(4)) * 1e3
    qtype = getattr(gguf.GGMLQuantizationType, tensor_type)
    expected = gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), qtype), qtype)
    assert np.array_equal(round_matrix(w, fmt).numpy(), expected)


@pytest.mark.parametrize("call, error, message", [
    (lambda: quantize_q8_0(torch.zeros(32)), ValueError,
     "w must be a 2-D (rows, n) tensor with n a multiple of 32, got shape (32,)"),
    (lambda: quantize_q4_0(torch.zeros(2, 48)), ValueError,
     "w must be a 2-D (rows, n) tensor with n a multiple of 32, got shape (2, 48)"),
    (lambda: quantize_q8_0(torch.zeros(2, 32, dtype=torch.int32)), TypeError,
     "w must be a floating-point tensor, got a torch.int32 tensor"),
    (lambda: quantize_q4_0([[1.0] * 32]), TypeError, "w must be a floating-point tensor, got 'list'"),
    (lambda: dequantize_q8_0(torch.zeros(1, 1, dtype=torch.float16), torch.zeros(1, 32, dtype=torch.uint8)),
     TypeError, "q must be a torch.int8 tensor, got a torch.uint8 tensor"),
    (lambda: dequantize_q4_0(torch.zeros(1, 1), torch.zeros(1, 32, dtype=torch.uint8)),
     TypeError, "scale must be a torch.float16 tensor, got a torch.float32 tensor"),
    (lambda: dequantize_q4_0(torch.zeros(1, 2, dtype=torch.float16), torch.zeros(1, 32, dtype=torch.uint8)),
     ValueError, "scale must have shape (rows, n // 32) = (1, 1) for q of shape (1, 32), got (1, 2)"),
    (lambda: pack_q4_0(torch.full((1, 32), 16, dtype=torch.uint8)), ValueError, "q must hold codes 0..15, got a code 16"),
    (lambda: gguf_blocks(*quantize_q8_0(torch.ones(1, 32)), "q4_k"), ValueError,
     "fmt must be one of q8_0, q4_0, got 'q4_k'"),
    (lambda: round_matrix(torch.ones(1, 32), "int4"), ValueError,
     "fmt must be one of fp16, bf16, q8_0, q4_0, got 'int4'"),
])
def test_bad_input_is_refused_before_any_work(call, error, message):
    with pytest.raises(error) as excinfo:
        call()
    assert str(excinfo.value) == message


# --- round_weights: the model a format means ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny")).eval()


@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_round_weights_rounds_the_block_matrices_and_the_token_table_only(tiny, fmt):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    rounded = round_weights(tiny.double(), fmt)  # a float64 model: the copy is float32 all the same
    tiny.float()
    assert rounded is not tiny and rounded.lm_head.weight is rounded.transformer.wte.weight  # still tied
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())  # the model passed in is untouched
    names = [k for k in before if is_rounded(k)]
    assert sorted(names) == sorted(["transformer.wte.weight", "lm_head.weight"] + [
        f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")])
    for name, value in rounded.state_dict().items():
        assert value.dtype == torch.float32
        expected = round_matrix(before[name], fmt) if is_rounded(name) else before[name]
        assert torch.equal(value, expected), name
        assert is_rounded(name) or torch.equal(value, before[name])
    assert not torch.equal(rounded.transformer.wte.weight, before["transformer.wte.weight"])


def test_round_weights_refuses_bad_input(tiny):
    with pytest.raises(ValueError, match=r"^fmt must be one of fp16, bf16, q8_0, q4_0, got 'int8'$"):
        round_weights(tiny, "int8")
    with pytest.raises(TypeError, match=r"^model must be a minigpt GPT, got Linear$"):
        round_weights(torch.nn.Linear(32, 32), "q8_0")
    odd = GPT(GPTConfig.from_preset("tiny", n_embd=48, n_head=4))
    with pytest.raises(ValueError, match=r"^fmt='q4_0' needs rows of a multiple of 32 weights: transformer.wte.weight "
                                         r"has shape \(50257, 48\) \(n_embd must be a multiple of 32\)$"):
        round_weights(odd, "q4_0")
    assert round_weights(odd, "bf16").config.n_embd == 48  # 16-bit formats have no blocks
