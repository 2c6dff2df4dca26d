"""int8 weights: the per-channel scheme is exact where it should be, both kernels compute it, and the loss stays;
and round_weights' Q8_0 activations, the readable reference of llama.cpp's arithmetic."""

import time

import pytest
import torch

import minigpt.quantize
from minigpt.checkpoint import load_model
from minigpt.data import load_splits
from minigpt.fast import FastDecoder, native
from minigpt.generate import generate
from minigpt.model import GPT, GPTConfig
from minigpt.quantize import (
    ACTIVATIONS,
    BLOCK_FORMATS,
    Int8Linear,
    choose_int8_kernel,
    dequantize,
    has_vnni,
    int8_kernels_here,
    quantize_model,
    quantize_per_channel,
    round_matrix,
    round_weights,
)
from minigpt.train import heldout_loss

KERNELS = int8_kernels_here()


@pytest.fixture(scope="module")
def model():
    """A tiny random GPT with large weights: peaked, varied next-token distributions."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", n_embd=128, n_head=2)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if "ln_" in name else p.normal_(0.0, 0.15)
    return model


def test_quantize_per_channel_by_hand():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [100.0, -3.0, 50.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    # each row's own absmax / 127: the large second row does not crush the first
    assert torch.allclose(scale, torch.tensor([1.0 / 127, 100.0 / 127, 1.0]), rtol=1e-7)
    assert q.tolist() == [[64, -127, 32, 0], [127, -4, 64, 1], [0, 0, 0, 0]]  # 63.5 rounds to 64 (to even)
    assert torch.equal(dequantize(q, scale), q.float() * scale[:, None])


def test_the_error_is_at_most_half_a_step():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 64)[:, None]
    q, scale = quantize_per_channel(w)
    assert q.abs().amax(dim=1).eq(127).all()  # every row uses the whole range
    error = (dequantize(q, scale) - w).abs()
    assert (error <= scale[:, None] / 2 * (1 + 1e-6)).all()


@pytest.mark.parametrize("w, message", [
    (torch.zeros(4), "w must be a 2-D floating-point (out, in) tensor, got a 1-D torch.float32 tensor"),
    (torch.zeros(2, 2, dtype=torch.int64), "w must be a 2-D floating-point (out, in) tensor, got a 2-D torch.int64 tensor"),
    ([[1.0]], "w must be a 2-D floating-point (out, in) tensor, got 'list'"),
])
def test_quantize_refuses_what_is_not_a_matrix(w, message):
    with pytest.raises(ValueError) as e:
        quantize_per_channel(w)
    assert str(e.value) == message


@pytest.mark.parametrize("kernel", KERNELS)
def test_int8_linear_computes_x_times_the_dequantized_weights(kernel):
    g = torch.Generator().manual_seed(0)
    weight, bias, x = torch.randn(96, 64, generator=g), torch.randn(96, generator=g), torch.randn(2, 5, 64, generator=g)
    layer = Int8Linear(weight, bias, kernel)
    expected = x @ dequantize(*quantize_per_channel(weight)).T + bias
    got = layer(x)
    assert got.shape == (2, 5, 96)
    # weight-only: the same numbers summed in another order; dynamic also rounds x to 8 bits (one step is
    # max|x| / 127 or / 255), which moves an output by about sqrt(64) steps times a weight
    tolerance = 1e-4 if kernel == "weight-only" else 0.05 * expected.abs().max().item()
    assert (got - expected).abs().max().item() <= tolerance


def test_choose_int8_kernel_asks_what_runs(monkeypatch):
    assert choose_int8_kernel("auto", torch.randn(32, 32)) in KERNELS
    monkeypatch.setattr(minigpt.quantize, "int8_kernels_here", lambda: ("weight-only",))
    assert choose_int8_kernel("auto", torch.randn(32, 32)) == "weight-only"
    with pytest.raises(ValueError) as e:
        choose_int8_kernel("dynamic", torch.randn(32, 32))
    assert str(e.value) == ("int8 kernel 'dynamic' cannot run here: it needs fbgemm (x86 with AVX2); "
                            "this CPU runs weight-only")
    with pytest.raises(ValueError, match="int8 kernel must be one of auto, dynamic, weight-only, got 'int4'"):
        choose_int8_kernel("int4", torch.randn(32, 32))


@pytest.mark.skipif("dynamic" not in KERNELS, reason="fbgemm does not run here: one kernel, nothing to time")
def test_auto_times_the_kernels_in_turns_so_a_busy_spell_cannot_pick_the_slow_one(monkeypatch):
    calls = []

    def forward(self, x):  # weight-only is 2 ms slower, and the first 22 calls (a busy spell) take 4 ms
        calls.append(self.kernel)
        time.sleep(0.004 if len(calls) <= 22 else 0.002 * (self.kernel == "weight-only"))
        return x

    monkeypatch.setattr(Int8Linear, "forward", forward)
    # one kernel's warm-up and 20 timed calls in a row would all fall in the spell, and it would lose
    assert choose_int8_kernel("auto", torch.randn(8, 8), repeats=20) == "dynamic"
    assert calls[:6] == ["dynamic", "weight-only"] * 3


def test_quantize_model_replaces_every_linear_and_leaves_the_model(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = quantize_model(model, kernel="weight-only")
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.modules())
    assert sum(isinstance(m, Int8Linear) for m in int8.modules()) == 4 * model.config.n_layer + 1  # + the head
    assert torch.equal(int8.transformer.wte.weight, model.transformer.wte.weight)  # the lookup stays float32
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"model has no nn.Linear layer to quantize \(Embedding\)"):
        quantize_model(torch.nn.Embedding(3, 4))


@pytest.mark.parametrize("kernel", KERNELS)
def test_fast_int8_decoder_makes_the_readable_int8_models_tokens(model, kernel):
    torch.manual_seed(1)
    ids = torch.randint(0, 50000, (3, 7))  # test_fast's prompts
    expected = generate(quantize_model(model, kernel=kernel), ids, max_new_tokens=30).ids
    decoder = FastDecoder(model, max_batch_size=3, max_len=40, weights="int8", int8_kernel=kernel)
    assert decoder.int8_kernel == kernel
    # the C step runs the dynamic kernel's arithmetic where it builds; torch's int8 step runs the rest
    assert decoder.matmul == ("native" if kernel == "dynamic" and native.available() else "int8")
    assert isinstance(decoder.head[0], Int8Linear) and decoder.wte.dtype == torch.float32
    assert torch.equal(decoder.generate(ids, max_new_tokens=30).ids, expected)
    assert len(set(expected[:, 7:].flatten().tolist())) > 5  # the model really varies its tokens


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights="int4"), "weights must be one of float, int8, fp16, bf16, q8_0, q4_0, got 'int4'"),
    (dict(weights="int8", dtype=torch.bfloat16), "weights='int8': int8 weights compute in float32, got dtype=torch.bfloat16"),
    (dict(weights="int8", compile=True), "weights='int8': int8 weights cannot be compiled"),
    (dict(weights="int8", matmul="blas"), "weights='int8': int8 weights bring their own kernel (int8_kernel=), got matmul='blas'"),
    (dict(weights="int8", int8_kernel="fast"), "int8 kernel must be one of auto, dynamic, weight-only, got 'fast'"),
])
def test_fast_int8_decoder_refuses_what_it_cannot_do(model, kwargs, message):
    with pytest.raises(ValueError) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, **kwargs)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("kernel", KERNELS)
def test_int8_costs_the_shipped_model_under_002_nats(kernel):
    """The issue's bar: held-out loss with int8 weights within 0.02 nats/token of fp32."""
    _, heldout = load_splits()
    fp32 = load_model("shakespeare")
    # 4 windows (1,024 targets) spread over the three held-out plays: the change is paired, window for window,
    # so a few suffice (dynamic: +0.0014 over 16 windows, -0.0002 over these 4); and weight-only's kernel is
    # slow on many rows at a time (16 windows took 61 s)
    windows = dict(block_size=fp32.config.block_size, max_windows=4)
    base = heldout_loss(fp32, heldout, **windows)
    int8 = heldout_loss(quantize_model(fp32, kernel=kernel), heldout, **windows)
    assert abs(int8 - base) < 0.02, (kernel, base, int8)


@pytest.mark.parametrize("capability, vnni, expected", [("AVX512", True, True), ("AVX512", False, False),
                                                        ("AVX2", True, False), ("DEFAULT", True, False)])
def test_vnni_is_what_the_cpu_has_at_torchs_instruction_level(monkeypatch, capability, vnni, expected):
    """An AVX-512 VNNI CPU told to run as AVX2 (ATEN_CPU_CAPABILITY=avx2) quantizes as an AVX2 one: 7 bits."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    assert has_vnni() is expected
    if "dynamic" in int8_kernels_here():
        assert Int8Linear(torch.randn(4, 8), None, kernel="dynamic").reduce_range is not expected
    assert Int8Linear(torch.randn(4, 8), None, kernel="weight-only").reduce_range is False


# --- llama.cpp's arithmetic: the inputs of the block formats' matrices rounded to Q8_0 (round_weights' reference)


class _RoundedInput(torch.nn.Module):
    """By hand: a linear layer whose input rows are rounded through Q8_0 first."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        rows = round_matrix(x.reshape(-1, x.shape[-1]), "q8_0").view(x.shape)
        return torch.nn.functional.linear(rows, self.linear.weight, self.linear.bias)


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_q8_0_activations_round_every_rounded_matrixs_input(model, fmt):
    a8 = round_weights(model, fmt, activations="q8_0")
    by_hand = round_weights(model, fmt)  # the same weights, no hooks: each rounded matrix wrapped instead
    for block in by_hand.transformer.h:
        block.attn.c_attn, block.attn.c_proj = _RoundedInput(block.attn.c_attn), _RoundedInput(block.attn.c_proj)
        block.mlp.c_fc, block.mlp.c_proj = _RoundedInput(block.mlp.c_fc), _RoundedInput(block.mlp.c_proj)
    by_hand.lm_head = _RoundedInput(by_hand.lm_head)
    torch.manual_seed(2)
    ids = torch.randint(0, 50000, (2, 9))
    with torch.no_grad():
        got, expected = a8(ids), by_hand(ids)
        plain = round_weights(model, fmt)(ids)
    assert torch.equal(got, expected)
    assert (got - plain).abs().max() > 1e-3  # the rounding of the inputs counts
    assert a8.lm_head.weight is a8.transformer.wte.weight  # the tie kept
    hooked = [name for name, m in a8.named_modules() if m._forward_pre_hooks]
    assert len(hooked) == 4 * model.config.n_layer + 1 and hooked[-1] == "lm_head"


def test_float32_activations_are_the_default_and_change_nothing(model):
    default, explicit = round_weights(model, "q4_0"), round_weights(model, "q4_0", activations="float32")
    assert not any(m._forward_pre_hooks for m in default.modules())
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(default(ids), explicit(ids))
    assert ACTIVATIONS == ("float32", "q8_0")


@pytest.mark.parametrize("fmt, activations, error, message", [
    ("fp16", "q8_0", ValueError, "activations='q8_0' needs fmt q8_0 or q4_0 (its blocks of 32 are those of the "
                                 "weights), got fmt='fp16'; allowed with it: 'float32'"),
    ("bf16", "q8_0", ValueError, "activations='q8_0' needs fmt q8_0 or q4_0 (its blocks of 32 are those of the "
                                 "weights), got fmt='bf16'; allowed with it: 'float32'"),
    ("q8_0", "int8", ValueError, "activations must be one of float32, q8_0, got 'int8'"),
])
def test_q8_0_activations_need_a_block_format(model, fmt, activations, error, message):
    with pytest.raises(error) as e:
        round_weights(model, fmt, activations=activations)
    assert str(e.value) == message
