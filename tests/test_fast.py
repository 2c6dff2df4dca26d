"""The fast path makes exactly the readable loop's tokens, and leaves the user's model alone."""

import time

import pytest
import torch

import minigpt.fast.decoder
import minigpt.fast.kernels
from minigpt.fast import FastDecoder, UnsupportedOptions, choose_matmul, native, onednn_supports
from minigpt.fast.options import AUTO, MATMULS, TABLE, refusal
from minigpt.generate import PAD_TOKEN_ID, generate
from minigpt.kv_cache import KVCache
from minigpt.model import GPT, GPTConfig

N_STEPS = 60
CPU = torch.device("cpu")
# oneDNN's own probes, asked directly here so the tests check onednn_supports against them
PROBES = {torch.bfloat16: ("bf16", "_is_mkldnn_bf16_supported"), torch.float16: ("fp16", "_is_mkldnn_fp16_supported")}


@pytest.fixture(scope="module")
def model():
    """A tiny random GPT with large weights: peaked, varied next-token distributions, so slips show."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", n_embd=128, n_head=2)).eval()  # 64-wide heads, as GPT-2
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if ".ln_" in name or "ln_f" in name else p.normal_(0.0, 0.15)
    return model


@pytest.fixture(scope="module")
def prompt():
    """Three left-padded prompts of 7, 4 and 6 tokens."""
    torch.manual_seed(1)
    ids = torch.randint(0, 50000, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :1] = 0
    return ids.masked_fill(mask == 0, PAD_TOKEN_ID), mask


@pytest.mark.parametrize("matmul", ["auto", "tuned", "onednn", "blas-in-out", "blas"])
@pytest.mark.parametrize("static", [False, True])
def test_greedy_equals_eager(model, prompt, matmul, static):
    ids, mask = prompt
    expected = generate(model, ids, attention_mask=mask, max_new_tokens=N_STEPS).ids
    decoder = FastDecoder(model, max_batch_size=4, max_len=80, static=static, matmul=matmul)
    assert torch.equal(decoder.generate(ids, mask, max_new_tokens=N_STEPS).ids, expected)
    assert len(set(expected[:, 7:].flatten().tolist())) > 10  # the test model really varies its tokens


def test_greedy_without_padding_attends_without_a_mask(model, prompt, monkeypatch):
    ids = prompt[0][:, -4:]  # the last 4 tokens of each row are real: no padding anywhere
    expected = generate(model, ids, max_new_tokens=N_STEPS).ids
    decoder = FastDecoder(model, max_batch_size=3, max_len=80, matmul="tuned")
    masks = []
    attention = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(minigpt.fast.decoder.F, "scaled_dot_product_attention",
                        lambda *a, attn_mask=None, **kw: masks.append(attn_mask) or attention(*a, attn_mask=attn_mask, **kw))
    assert torch.equal(decoder.generate(ids, max_new_tokens=N_STEPS).ids, expected)
    assert not decoder.padded and masks[0] is not None and all(m is None for m in masks[model.config.n_layer:])


def test_greedy_equals_eager_in_bf16(model, prompt):
    ids, mask = prompt
    # the fast path attends with F.scaled_dot_product_attention; in bf16 its rounding differs from the
    # hand-written attention's enough to flip a near tie now and then, so the reference uses it too
    eager = GPT(GPTConfig.from_preset("tiny", n_embd=128, n_head=2, use_sdpa=True)).eval()
    eager.load_state_dict(model.state_dict())
    expected = generate(eager.to(torch.bfloat16), ids, attention_mask=mask, max_new_tokens=30).ids
    # runs on every CPU: oneDNN where the CPU has bf16 (AVX512-BF16, AMX), else the BLAS fallback
    decoder = FastDecoder(model, max_batch_size=3, max_len=40, dtype=torch.bfloat16)
    assert decoder.matmul == ("tuned" if onednn_supports(torch.bfloat16) else "blas-in-out")
    assert torch.equal(decoder.generate(ids, mask, max_new_tokens=30).ids, expected)


def test_greedy_equals_eager_in_fp64(model, prompt):
    ids, mask = prompt
    eager = GPT(GPTConfig.from_preset("tiny", n_embd=128, n_head=2)).eval()
    eager.load_state_dict(model.state_dict())
    expected = generate(eager.to(torch.float64), ids, attention_mask=mask, max_new_tokens=20).ids
    decoder = FastDecoder(model, max_batch_size=3, max_len=40, dtype=torch.float64)
    assert decoder.matmul == "blas-in-out"  # oneDNN has no fp64 inner product on any CPU
    assert torch.equal(decoder.generate(ids, mask, max_new_tokens=20).ids, expected)


def test_compiled_static_step_equals_eager(model, prompt):
    ids, mask = prompt
    expected = generate(model, ids, attention_mask=mask, max_new_tokens=12).ids
    # Inductor's FX graph cache does not key on the vector ISA (ATEN_CPU_CAPABILITY): a graph cached by a
    # native AVX-512 run is reused under the emulated CPUs, where its C++ then fails to build (default) or
    # segfaults (avx2). Its per-kernel C++ cache does key on the compiler flags, so compiling stays cheap.
    with torch._inductor.config.patch(fx_graph_cache=False):
        decoder = FastDecoder(model, max_batch_size=3, max_len=20, compile=True)
        assert decoder.static
        assert torch.equal(decoder.generate(ids, mask, max_new_tokens=12).ids, expected)


def test_decoder_is_reusable_with_smaller_batches_and_prompts(model, prompt):
    ids, mask = prompt
    decoder = FastDecoder(model, max_batch_size=3, max_len=40)
    decoder.generate(ids, mask, max_new_tokens=30)
    for rows, start in ((slice(1, 2), 3), (slice(0, 3), 0), (slice(2, 3), 1)):
        sub_ids, sub_mask = ids[rows, start:], mask[rows, start:]
        expected = generate(model, sub_ids, attention_mask=sub_mask, max_new_tokens=25).ids
        assert torch.equal(decoder.generate(sub_ids, sub_mask, max_new_tokens=25).ids, expected)


def test_cache_holds_the_readable_models_keys_and_values(model, prompt):
    ids = prompt[0][:1]  # the unpadded row
    decoder = FastDecoder(model, max_batch_size=1, max_len=20, matmul="blas")
    out = decoder.generate(ids, max_new_tokens=5).ids
    filled = out.size(1) - 1  # every token but the last went through the model
    reference = KVCache.for_model(model, batch_size=1, max_len=20)
    with torch.no_grad():
        model(out[:, :filled], kv_cache=reference)
    C, nh = model.config.n_embd, model.config.n_head
    for layer, cache in enumerate(decoder.cache):  # (B, max_len, 2C): each position's key, then its value
        keys, values = cache[:, :filled].view(1, filled, 2, nh, C // nh).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        torch.testing.assert_close(keys, reference.keys[layer][:, :, :filled])
        torch.testing.assert_close(values, reference.values[layer][:, :, :filled])
    assert not decoder.cache[0][:, filled:].any()  # nothing written past the last token


@pytest.mark.parametrize("eos_row, eos_step", [(0, 3), (1, 20), (2, 40), (None, None)])
def test_greedy_with_eos_equals_eager(model, prompt, eos_row, eos_step):
    ids, mask = prompt
    greedy = generate(model, ids, attention_mask=mask, max_new_tokens=N_STEPS).new_tokens
    # an EOS id that row `eos_row` really emits at `eos_step`; None: a token that no row emits
    eos = greedy[eos_row][eos_step] if eos_row is not None else min(set(range(50257)) - {t for r in greedy for t in r})
    expected = generate(model, ids, attention_mask=mask, max_new_tokens=N_STEPS, eos_token_id=eos)
    got = FastDecoder(model, max_batch_size=3, max_len=80).generate(ids, mask, max_new_tokens=N_STEPS, eos_token_id=eos)
    assert torch.equal(got.ids, expected.ids) and torch.equal(got.attention_mask, expected.attention_mask)
    assert got.new_tokens == expected.new_tokens and got.stopped_by == expected.stopped_by  # one result type


def test_every_row_ending_stops_early(model, prompt):
    ids, mask = prompt
    greedy = generate(model, ids, attention_mask=mask, max_new_tokens=N_STEPS).new_tokens
    eos = sorted({r[2] for r in greedy} | {r[5] for r in greedy})  # every row ends by step 5
    expected = generate(model, ids, attention_mask=mask, max_new_tokens=N_STEPS, eos_token_id=eos).ids
    got = FastDecoder(model, max_batch_size=3, max_len=80).generate(ids, mask, max_new_tokens=N_STEPS, eos_token_id=eos).ids
    assert torch.equal(got, expected)
    assert got.size(1) <= 7 + 6


@pytest.mark.parametrize("settings", [dict(), dict(temperature=0.7, top_k=20), dict(top_p=0.9), dict(min_p=0.05)])
def test_sampling_equals_eager_with_the_same_seed(model, prompt, settings):
    ids, mask = prompt
    decoder = FastDecoder(model, max_batch_size=3, max_len=80)
    first = decoder.generate(ids, mask, max_new_tokens=40, do_sample=True, seed=7, **settings).ids
    again = decoder.generate(ids, mask, max_new_tokens=40, do_sample=True, generator=torch.Generator().manual_seed(7), **settings).ids
    eager = generate(model, ids, attention_mask=mask, max_new_tokens=40, do_sample=True, seed=7, **settings).ids
    other = decoder.generate(ids, mask, max_new_tokens=40, do_sample=True, seed=8, **settings).ids
    assert torch.equal(first, again) and torch.equal(first, eager)
    assert not torch.equal(first, other)


def test_temperature_zero_is_greedy(model, prompt):
    ids, mask = prompt
    decoder = FastDecoder(model, max_batch_size=3, max_len=40)
    greedy = decoder.generate(ids, mask, max_new_tokens=10).ids
    assert torch.equal(decoder.generate(ids, mask, max_new_tokens=10, do_sample=True, temperature=0.0).ids, greedy)


def test_user_model_is_untouched(model, prompt):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strides = {k: v.stride() for k, v in model.state_dict().items()}
    decoder = FastDecoder(model, max_batch_size=3, max_len=40, matmul="blas-in-out", dtype=torch.bfloat16)
    decoder.generate(*prompt, max_new_tokens=5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].stride() == strides[k] for k in before)
    assert all(v.dtype == torch.float32 for v in after.values())
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    assert decoder.wte.data_ptr() != model.transformer.wte.weight.data_ptr()  # the decoder owns a copy


def test_in_out_layout_keeps_the_head_tied(model):
    decoder = FastDecoder(model, max_batch_size=1, max_len=8, matmul="blas-in-out")
    assert torch.equal(decoder.wte, model.transformer.wte.weight)
    assert decoder.wte.stride() == (1, model.config.vocab_size)  # (in, out) storage
    assert decoder.blocks[0].c_attn[0].stride() == (1, 3 * model.config.n_embd)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_batch_size=0), "max_batch_size must be an integer >= 1, got 0"),
    (dict(max_batch_size=1, max_len=129), "max_len must be an integer in [1, 128] (the model's context), got 129"),
    (dict(max_batch_size=1, matmul="mkl"), "matmul must be one of auto, native, tuned, onednn, blas-in-out, blas, "
                                          "got 'mkl'"),
    (dict(max_batch_size=1, dtype=torch.int8), "dtype must be one of torch.float32, torch.bfloat16, "
                                               "torch.float16, torch.float64 or None, got torch.int8"),
    (dict(max_batch_size=1, dtype=torch.int64), "dtype must be one of torch.float32, torch.bfloat16, "
                                                "torch.float16, torch.float64 or None, got torch.int64"),
    (dict(max_batch_size=1, dtype=torch.complex64), "dtype must be one of torch.float32, torch.bfloat16, "
                                                    "torch.float16, torch.float64 or None, got torch.complex64"),
])
def test_constructor_errors(model, kwargs, message):
    with pytest.raises(ValueError) as e:
        FastDecoder(model, **kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype="bfloat16"), "dtype must be one of torch.float32, torch.bfloat16, torch.float16, torch.float64 "
                             "or None, got 'bfloat16'"),
    (dict(dtype=float), "dtype must be one of torch.float32, torch.bfloat16, torch.float16, torch.float64 "
                        "or None, got <class 'float'>"),
    (dict(compile="no"), "compile must be True or False, got 'no'"),
    (dict(static=1), "static must be True or False or None, got 1"),
])
def test_constructor_type_errors(model, kwargs, message):
    with pytest.raises(TypeError) as e:
        FastDecoder(model, max_batch_size=1, **kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("batch, length, new, message", [
    (3, 7, 30, "batch size must be <= max_batch_size=2, got 3"),
    (2, 7, 30, "prompt length + max_new_tokens must be <= max_len=32, got 7 + 30"),
    (2, 7, 0, "max_new_tokens must be an integer >= 1, got 0"),
])
def test_call_errors(model, batch, length, new, message):
    decoder = FastDecoder(model, max_batch_size=2, max_len=32)
    with pytest.raises(ValueError) as e:
        decoder.generate(torch.zeros(batch, length, dtype=torch.long), max_new_tokens=new)
    assert str(e.value) == message


@pytest.mark.parametrize("do_sample", ["yes", "False", 1, 0, None, torch.tensor(True)])
def test_do_sample_must_be_a_bool(model, prompt, do_sample):
    decoder = FastDecoder(model, max_batch_size=3, max_len=16)
    out, key_ok = decoder.out.clone(), decoder.key_ok.clone()
    with pytest.raises(TypeError) as e:
        decoder.generate(*prompt, max_new_tokens=2, do_sample=do_sample)
    assert str(e.value) == f"do_sample must be True or False, got {do_sample!r}"
    # raised before any work: the decoder's buffers still hold nothing of this call
    assert torch.equal(decoder.out, out) and torch.equal(decoder.key_ok, key_ok)


def test_sampling_settings_are_checked(model):
    decoder = FastDecoder(model, max_batch_size=1, max_len=8)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 1.5"):
        decoder.generate(torch.zeros(1, 2, dtype=torch.long), max_new_tokens=2, do_sample=True, top_p=1.5)


def test_choose_matmul():
    assert choose_matmul("auto", torch.device("cpu")) == ("native" if native.available() else "tuned")
    assert choose_matmul("auto", torch.device("cpu"), static=True) == "tuned"  # the C step reads the sliced cache
    assert choose_matmul("auto", torch.device("cuda")) == "blas"
    assert choose_matmul("auto", torch.device("cpu"), compile=True) == "blas-in-out"
    with pytest.raises(ValueError, match="matmul must be 'auto' or 'blas' on cuda, got 'onednn'"):
        choose_matmul("onednn", torch.device("cuda"))
    with pytest.raises(ValueError, match=r"matmul='onednn' cannot be compiled \(torch.compile lowers"):
        choose_matmul("onednn", torch.device("cpu"), compile=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_auto_falls_back_to_blas_where_onednn_lacks_the_dtype(model, prompt, monkeypatch, dtype):
    # a CPU without AVX512-BF16/FP16 or AMX, whatever this one has: oneDNN runs fp32 only
    monkeypatch.setattr(minigpt.fast.kernels, "onednn_supports", lambda d: d == torch.float32)
    assert choose_matmul("auto", CPU, dtype=dtype) == "blas-in-out"
    assert choose_matmul("auto", CPU, dtype=torch.float32, static=True) == "tuned"
    decoder = FastDecoder(model, max_batch_size=3, max_len=16, dtype=dtype)
    assert decoder.matmul == "blas-in-out" and decoder.linear_for(3) is torch.nn.functional.linear
    assert decoder.wte.stride() == (1, model.config.vocab_size)  # the (in, out) layout BLAS reads fastest
    assert decoder.generate(*prompt, max_new_tokens=4).ids.shape == (3, 11)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_auto_picks_onednn_where_the_cpu_has_the_dtype(monkeypatch, dtype):
    monkeypatch.setattr(minigpt.fast.kernels, "onednn_supports", lambda d: True)
    assert choose_matmul("auto", CPU, dtype=dtype) == "tuned"
    assert choose_matmul("onednn", CPU, dtype=dtype) == "onednn"
    assert choose_matmul("auto", CPU, compile=True, dtype=dtype) == "blas-in-out"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_explicit_onednn_without_the_dtype_is_an_error(model, monkeypatch, dtype):
    monkeypatch.setattr(minigpt.fast.kernels, "onednn_supports", lambda d: d == torch.float32)
    name, probe = PROBES[dtype]
    message = (f"matmul='onednn' cannot run here: this CPU's oneDNN has no {name} inner product "
               f"(torch.ops.mkldnn.{probe}() is False); use matmul='auto' or 'blas-in-out'")
    with pytest.raises(ValueError) as e:
        choose_matmul("onednn", CPU, dtype=dtype)
    assert str(e.value) == message
    with pytest.raises(ValueError) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, dtype=dtype, matmul="onednn")
    assert str(e.value) == message


def test_explicit_onednn_without_onednn_in_torch_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not onednn_supports(torch.float32)
    assert choose_matmul("auto", CPU, static=True) == "blas-in-out"
    with pytest.raises(ValueError) as e:
        choose_matmul("onednn", CPU)
    assert str(e.value) == ("matmul='onednn' cannot run here: this torch build has no oneDNN "
                            "(torch.backends.mkldnn.is_available() is False); use matmul='auto' or 'blas-in-out'")


def test_explicit_onednn_in_fp64_is_an_error():
    with pytest.raises(ValueError) as e:
        choose_matmul("onednn", CPU, dtype=torch.float64)
    assert str(e.value) == ("matmul='onednn' cannot run here: oneDNN has no torch.float64 inner product; "
                            "use matmul='auto' or 'blas-in-out'")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_this_cpu_gets_the_matmul_it_can_run(model, prompt, dtype):
    """No patching: what this CPU's oneDNN says decides, and whichever way it goes, nothing crashes."""
    name, probe = PROBES[dtype]
    has = torch.backends.mkldnn.is_available() and getattr(torch.ops.mkldnn, probe)()
    assert onednn_supports(dtype) == has
    assert choose_matmul("auto", CPU, dtype=dtype) == ("tuned" if has else "blas-in-out")
    if has:
        decoder = FastDecoder(model, max_batch_size=3, max_len=16, dtype=dtype, matmul="onednn")
        assert decoder.generate(*prompt, max_new_tokens=4).ids.shape == (3, 11)
    else:
        with pytest.raises(ValueError, match=rf"oneDNN has no {name} inner product \(torch.ops.mkldnn.{probe}"):
            FastDecoder(model, max_batch_size=3, max_len=16, dtype=dtype, matmul="onednn")
    decoder = FastDecoder(model, max_batch_size=3, max_len=16, dtype=dtype)  # the crash
    assert decoder.generate(*prompt, max_new_tokens=4).ids.shape == (3, 11)


def test_choose_matmul_checks_its_arguments():
    with pytest.raises(TypeError, match="dtype must be one of torch.float32, .* got 'bfloat16'"):
        choose_matmul("auto", CPU, dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype must be one of torch.float32, .* got torch.int8"):
        choose_matmul("auto", CPU, dtype=torch.int8)
    with pytest.raises(TypeError, match="compile must be True or False, got 'yes'"):
        choose_matmul("auto", CPU, compile="yes")


def test_tuned_times_the_kernels_once_per_batch_size(model, prompt):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: nothing to time")
    decoder = FastDecoder(model, max_batch_size=4, max_len=40, matmul="tuned")
    ids, mask = prompt
    decoder.generate(ids, mask, max_new_tokens=3)
    decoder.generate(ids[:1], mask[:1], max_new_tokens=3)
    assert set(decoder.tuned) == {3, 1}
    c = model.config  # one choice per matrix shape: QKV, attention output, MLP up and down, the head
    shapes = {(c.n_embd, 3 * c.n_embd), (c.n_embd, c.n_embd), (c.n_embd, 4 * c.n_embd), (4 * c.n_embd, c.n_embd),
              (c.n_embd, c.vocab_size)}
    kernels = {"onednn", "blas", "blas-in-out"}
    assert all(set(chosen) == shapes and set(chosen.values()) <= kernels for chosen in decoder.tuned.values())
    # the first batch size timed fixed each shape's layout; the second kept it
    for shape, name in decoder.tuned[3].items():
        assert decoder.tuned_layout(shape) == ("in-out" if name == "blas-in-out" else "out-in")
        assert (decoder.tuned[1][shape] == "blas-in-out") == (name == "blas-in-out")


@pytest.mark.parametrize("fast", ["onednn", "blas", "blas-in-out"])
def test_tuned_keeps_the_fastest_kernel_and_its_layout(model, prompt, monkeypatch, fast):
    """With every other kernel slowed by 20 ms a call, ``fast`` wins on every shape, and its layout is kept."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: nothing to time")
    real = minigpt.fast.kernels.candidates()

    def slowed(kernel):
        def run(*args):
            time.sleep(0.02)  # far more than the real kernels differ on these small matrices
            return kernel(*args)
        return run

    monkeypatch.setattr(minigpt.fast.kernels, "candidates", lambda: {n: k if n == fast else slowed(k) for n, k in real.items()})
    decoder = FastDecoder(model, max_batch_size=2, max_len=40, matmul="tuned")
    ids, mask = prompt
    out = decoder.generate(ids[:2], mask[:2], max_new_tokens=4).ids
    assert set(decoder.tuned[2].values()) == {fast}
    in_out = fast == "blas-in-out"
    matrices = [m[0] for b in decoder.blocks for m in (b.c_attn, b.attn_proj, b.c_fc, b.mlp_proj)] + [decoder.head[0]]
    assert all(w.stride() == ((1, w.shape[0]) if in_out else (w.shape[1], 1)) for w in matrices)
    assert decoder.wte is decoder.head[0]  # the token table and the head still share one copy
    reference = generate(model, ids[:2], attention_mask=mask[:2], max_new_tokens=4).ids
    assert torch.equal(out, reference)
    # a later batch size keeps the layout: in-out shapes keep their kernel, the others never take it
    decoder.generate(ids[:1], mask[:1], max_new_tokens=2)
    assert all((name == "blas-in-out") == in_out for name in decoder.tuned[1].values())


def test_generate_picks_its_matmul_per_call_and_rebinds_nothing(model, prompt):
    """The tuned matmul is chosen per batch size at each call; the decoder's attributes stay as they were."""
    if not onednn_supports(torch.float32):
        pytest.skip("this torch has no oneDNN: nothing to tune")
    ids, mask = prompt
    decoder = FastDecoder(model, max_batch_size=3, max_len=40, matmul="tuned")
    decoder.generate(ids, mask, max_new_tokens=3)  # tunes batch 3 and fixes the layouts
    before = dict(vars(decoder))
    for rows in (slice(0, 1), slice(0, 3), slice(0, 1)):
        expected = generate(model, ids[rows], attention_mask=mask[rows], max_new_tokens=5).ids
        assert torch.equal(decoder.generate(ids[rows], mask[rows], max_new_tokens=5).ids, expected)
    assert "linear" not in vars(decoder)
    assert {k for k, v in vars(decoder).items() if v is not before.get(k)} <= {"padded"}
    assert decoder.linear_for(1) is decoder.linear_for(1) and decoder.linear_for(1) is not decoder.linear_for(3)


CUDA = torch.device("cuda")


@pytest.mark.parametrize("device", [CPU, CUDA])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("static", [False, True])
def test_every_option_is_read_from_the_one_table(device, dtype, compile, static):
    """A named matmul runs exactly where its row admits it; "auto" is the first admitted of AUTO's order."""
    options = (device, dtype, compile, static, "float")
    for matmul in MATMULS[1:]:
        problem = refusal(matmul, *options)
        if problem is None:
            assert choose_matmul(matmul, device, compile, dtype=dtype, static=static) == matmul
        else:
            with pytest.raises(UnsupportedOptions):
                choose_matmul(matmul, device, compile, dtype=dtype, static=static)
    first = next(m for m in AUTO["float"] if refusal(m, *options) is None)
    assert choose_matmul("auto", device, compile, dtype=dtype, static=static) == first


def test_the_table_says_why_in_the_decoders_error(model):
    assert set(TABLE) == {*MATMULS[1:], "int8"}
    assert TABLE["native"].why_not_static in str(pytest.raises(UnsupportedOptions, FastDecoder, model, 1, 8,
                                                               matmul="native", static=True).value)
    with pytest.raises(UnsupportedOptions) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, matmul="tuned", compile=True)
    assert str(e.value) == ("matmul='tuned' cannot be compiled (it times eager kernels); "
                            "use 'auto', 'blas-in-out' or 'blas'")
    assert isinstance(e.value, ValueError)  # callers that catch ValueError keep working
