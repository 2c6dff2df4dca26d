"""The C decode step (minigpt.fast.native) computes what the torch step computes, and is chosen only where it runs."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from minigpt.fast import FastDecoder, choose_matmul, layout, native
from minigpt.generate import PAD_TOKEN_ID, generate
from minigpt.model import GPT, GPTConfig
from minigpt.quantize import has_vnni, int8_kernels_here

CPU = torch.device("cpu")
needs_native = pytest.mark.skipif(not native.available(), reason=f"no C decode step here: {native.unavailable_reason()}")


def peaked_model() -> GPT:
    """A tiny random GPT with large weights (peaked, varied distributions) and a vocabulary of 1000."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", n_embd=128, n_head=2, vocab_size=1000)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if ".ln_" in name or "ln_f" in name else p.normal_(0.0, 0.15)
    return model


@pytest.fixture(scope="module")
def model():
    return peaked_model()


def prefilled(model, ids, mask, matmul):
    """A decoder of ``matmul`` that has run the prompt: its cache holds the prompt's keys and values."""
    decoder = FastDecoder(model, max_batch_size=4, max_len=64, matmul=matmul)
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
    decoder.key_ok[: len(ids), 0, 0, : ids.shape[1]] = mask.bool()
    decoder.padded = not bool(mask.all())
    with torch.inference_mode():
        decoder.prefill(ids, mask, positions)
    return decoder, positions[:, -1:] + 1


@needs_native
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("T", [9, 36])  # 36: two pieces of attention, the first's exponentials 16 (or 8) at a time
def test_a_c_step_gives_the_torch_steps_logits_and_cache(model, padded, T):
    torch.manual_seed(1)
    ids = torch.randint(0, 1000, (3, T))
    mask = torch.ones_like(ids)
    if padded:  # with T = 36, the first piece of 32 positions of row 1 is all padding
        mask[1, : min(T - 2, 33)] = 0
        ids = ids.masked_fill(mask == 0, PAD_TOKEN_ID % 1000)
    new = torch.randint(0, 1000, (3, 1))
    steps = {}
    for matmul in ("native", "blas"):
        decoder, positions = prefilled(model, ids, mask, matmul)
        with torch.inference_mode():
            steps[matmul] = decoder.decode_one_token(new, positions, T), [c[:3, : T + 1].clone() for c in decoder.cache]
    (logits, cache), (expected, expected_cache) = steps["native"], steps["blas"]
    assert logits.shape == (3, 1000) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)  # logits of size ~10: rounding only
    for c, e in zip(cache, expected_cache):
        torch.testing.assert_close(c, e, rtol=0, atol=1e-5)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))


@needs_native
def test_a_rows_logits_do_not_depend_on_the_batch_around_it(model):
    torch.manual_seed(2)
    ids = torch.randint(0, 1000, (4, 5))
    new = torch.randint(0, 1000, (4, 1))
    together, positions = prefilled(model, ids, torch.ones_like(ids), "native")
    with torch.inference_mode():
        batch = together.decode_one_token(new, positions, 5)
        for row in range(4):
            alone, pos = prefilled(model, ids[row : row + 1], torch.ones_like(ids[:1]), "native")
            for mine, theirs in zip(alone.cache, together.cache):  # the same cache (prefill is torch's GEMM)
                mine[0] = theirs[row]
            assert torch.equal(alone.decode_one_token(new[row : row + 1], pos, 5)[0], batch[row])  # bit for bit


@needs_native
def test_auto_decodes_in_c_and_gives_the_readable_loops_tokens(model):
    torch.manual_seed(3)
    ids = torch.randint(0, 1000, (2, 6))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    ids = ids.masked_fill(mask == 0, 0)
    decoder = FastDecoder(model, max_batch_size=2, max_len=64)
    assert decoder.matmul == "native" and decoder.native_step is not None
    expected = generate(model, ids, attention_mask=mask, max_new_tokens=50).ids
    assert torch.equal(decoder.generate(ids, mask, max_new_tokens=50).ids, expected)
    sampled = [decoder.generate(ids, mask, max_new_tokens=20, do_sample=True, seed=7).ids for _ in range(2)]
    assert torch.equal(*sampled)
    assert torch.equal(sampled[0], generate(model, ids, attention_mask=mask, max_new_tokens=20, do_sample=True,
                                            seed=7).ids)


@pytest.mark.parametrize("exists", [False, True])  # True: a file that is not executable
def test_without_a_compiler_auto_keeps_the_torch_step(model, monkeypatch, tmp_path, exists):
    cc = tmp_path / "no-such-cc"
    if exists:
        cc.write_text("not a program")
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path))
    reason = native.unavailable_reason()
    why = "Permission denied" if exists else "No such file or directory"
    assert reason == f"the C compiler {cc} cannot run ({why}); set $CC to a C compiler, or install cc, gcc or clang"
    assert not native.available()
    assert choose_matmul("auto", CPU) == ("tuned" if torch.backends.mkldnn.is_available() else "blas-in-out")
    with pytest.raises(ValueError) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, matmul="native")
    assert str(e.value) == f"matmul='native' cannot run here: {reason}; use matmul='auto' or 'blas-in-out'"
    decoder = FastDecoder(model, max_batch_size=1, max_len=8)
    assert decoder.native_step is None


def test_a_failed_build_says_what_the_compiler_said(monkeypatch, tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: error: unrecognized command-line option -fopenmp' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path))
    assert native.unavailable_reason() == (f"{fake} {' '.join(native.build_flags())} failed: "
                                           "cc: error: unrecognized command-line option -fopenmp")


@pytest.mark.parametrize("capability, vnni, f16c, vl, flags", [
    ("AVX512", True, True, True, ["-mavx512f", "-mfma", "-mavx512vnni", "-mavx512vl", "-mf16c"]),
    ("AVX512", True, True, False, ["-mavx512f", "-mfma", "-mavx512vnni", "-mf16c"]),
    ("AVX512", False, False, True, ["-mavx512f", "-mfma"]),
    ("AVX2", True, True, True, ["-mavx2", "-mfma", "-mf16c"]), ("AVX2", False, False, False, ["-mavx2", "-mfma"]),
    ("DEFAULT", False, True, True, []),
])
def test_the_build_asks_torch_what_the_cpu_runs(monkeypatch, capability, vnni, f16c, vl, flags):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    monkeypatch.setattr(native, "has_f16c", lambda cc: f16c)  # the compiler's answers for this CPU
    monkeypatch.setattr(native, "has_avx512vl", lambda cc: vl)
    assert native.build_flags() == ["-O3", "-shared", "-fPIC", "-fopenmp", *flags]


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype=torch.bfloat16), "the C decode step computes in float32, got dtype=torch.bfloat16"),
    (dict(static=True), "the C decode step is eager and reads the sliced cache (compile=False, static=False)"),
])
def test_native_where_it_cannot_run_is_an_error(model, kwargs, message):
    with pytest.raises(ValueError) as e:
        FastDecoder(model, max_batch_size=1, max_len=8, matmul="native", **kwargs)
    assert str(e.value) == f"matmul='native' cannot run here: {message}; use matmul='auto' or 'blas-in-out'"


def test_native_step_refuses_tensors_it_cannot_read():
    if not native.available():
        pytest.skip(native.unavailable_reason())
    w = torch.zeros(4, 4)
    message = "contiguous torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8 or torch.int32 CPU tensors, got"
    with pytest.raises(ValueError, match=rf"{message} torch.float32 on cpu with strides \(1, 4\)"):
        native.NativeStep([a_layer(w.t())], w, w, (w[0], w[0]), w, None, None, 1, 1, 4)
    with pytest.raises(ValueError, match=rf"{message} torch.float64 on cpu"):
        native.NativeStep([a_layer(w)], w, w, (w[0], w[0]), w.double(), None, None, 1, 1, 4)


def a_layer(t):
    """Every pointer of one layer set to ``t``, by layout.LAYER's names."""
    return {name: [t] * n for name, n in layout.LAYER}


def test_a_layer_is_read_by_the_declared_names_in_the_declared_order():
    t = torch.zeros(2)
    assert len(native.layer_pointers(a_layer(t))) == layout.PER_LAYER == 21
    swapped = dict(reversed(a_layer(t).items()))
    with pytest.raises(ValueError, match="a layer must hold ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj, cache "
                                         "in this order, got cache, "):
        native.layer_pointers(swapped)
    with pytest.raises(ValueError, match=r"a layer's c_attn is 4 tensors \(or None\), got 3"):
        native.layer_pointers({**a_layer(t), "c_attn": [t] * 3})


def test_the_decoders_blocks_are_the_layout_c_reads():
    """The decoder's per-block weights and the C step's per-layer entries are the same names, in order."""
    decoder = FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=1, max_len=8, matmul="blas")
    assert [*vars(decoder.blocks[0]), "cache"] == [name for name, _ in layout.LAYER]


def test_the_compiler_is_asked_which_instructions_this_cpu_has(monkeypatch, tmp_path):
    fake = tmp_path / "cc"  # a compiler whose -march=native defines F16C and AVX512-VL, and one other macro
    fake.write_text("#!/bin/sh\nprintf '#define __F16C__ 1\\n#define __AVX512VL__ 1\\n#define __x 2\\n'\n")
    fake.chmod(0o755)
    assert native.native_macros(str(fake)) == {"__F16C__", "__AVX512VL__"}
    assert native.has_f16c(str(fake)) and native.has_avx512vl(str(fake))
    assert native.native_macros(str(tmp_path / "missing")) == frozenset()


def test_the_header_is_the_one_declaration():
    text = layout.header()
    assert "enum { LN_1 = 0, C_ATTN = 2, ATTN_PROJ = 6, LN_2 = 10, C_FC = 12, MLP_PROJ = 16, CACHE = 20, " \
           "PER_LAYER = 21 };" in text
    assert all(f"{name};" in text for name, _ in layout.STEP_ARGS)
    assert "int compiled_layout(int64_t *, int);" in text
    assert "enum { FLOAT32_INPUTS = 0, Q8_0_INPUTS = 1 };" in text  # minigpt.quantize.ACTIVATIONS, numbered
    assert "enum {" not in native.SOURCE.read_text().split("decode_step_layout.h")[0]  # nothing declared before it


@needs_native
def test_the_library_reports_the_layout_python_declares():
    lib = native.load()
    expected = layout.expected_layout()
    compiled = (native.ctypes.c_int64 * len(expected))()
    assert lib.compiled_layout(compiled, len(expected)) == len(expected)
    assert list(compiled) == list(expected.values())


@needs_native
@pytest.mark.parametrize("change, message", [
    (dict(step_args=tuple((n, "int64_t" if n == "n_layer" else c) for n, c in layout.STEP_ARGS)),
     "StepArgs.n_layer size: C 8, Python 4"),
    (dict(layer=(*layout.LAYER, ("spare", 1))), "numbers reported: C 68, Python 67; PER_LAYER: C 22, Python 21"),
])
def test_a_library_built_from_another_layout_is_refused(monkeypatch, tmp_path, change, message):
    """C compiled from one declaration, Python reading another: refused on load, before any step runs."""
    other = layout.header(**change)
    monkeypatch.setattr(layout, "header", lambda: other)
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path))  # a library of its own: the header is in the build's key
    with pytest.raises(native.LayoutMismatch, match="was compiled with another layout than minigpt.fast.layout "
                                                    rf"declares \({message}"):
        native.available()
    assert len(list((tmp_path / "native").glob("decode_step-*.so"))) == 1


needs_fbgemm = pytest.mark.skipif("dynamic" not in int8_kernels_here(), reason="no fbgemm here: int8 stays in torch")


@needs_native
@needs_fbgemm
@pytest.mark.parametrize("vnni", [True, False])
def test_int8_decodes_in_c_as_fbgemms_dynamic_kernel(model, monkeypatch, vnni):
    """The C int8 step quantizes activations as fbgemm does: torch's int8 logits, up to the grid's rounding."""
    if not vnni:  # a CPU without VNNI: fbgemm is told to keep activations in 7 bits, and so is the C step
        monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    torch.manual_seed(4)
    ids = torch.randint(0, 1000, (4, 6))
    c_step = FastDecoder(model, max_batch_size=4, max_len=64, weights="int8", int8_kernel="dynamic")
    in_torch = FastDecoder(model, max_batch_size=4, max_len=64, weights="int8", int8_kernel="dynamic", static=True)
    assert c_step.native_step is not None and in_torch.native_step is None
    assert c_step.native_step.kept[2] is c_step.blocks[0].c_attn[0].q  # the C step reads the decoder's int8 copy
    assert c_step.native_step.qmax == (255 if vnni and has_vnni() else 127)
    out = c_step.generate(ids, max_new_tokens=40).ids
    with torch.inference_mode():
        logits = stepwise_logits(in_torch, out, 6)  # (4, 40, V): torch's int8 scores for each of the C step's picks
        own = stepwise_logits(c_step, out, 6)  # the C step's, the same way
    best, picked = logits.max(-1).values, logits.gather(-1, out[:, 6:, None])[..., 0]
    # float rounding (~1e-6) apart, except where it moves an activation across a rounding boundary of the
    # 8-bit grid: then a logit moves by up to ~1e-2 (and the caches part), and a near tie may go either way
    # (measured: 0 of 160 picks with 8 bits; 1, 0.001 behind the best, with 7; 2, 0.013 behind, with no
    # vector instructions)
    first = (own[:, 1] - logits[:, 1]).abs()  # the first decode step: both read the prompt's cache, filled by torch
    assert first.median() < 1e-5 and first.max() < 0.05
    assert (best - picked).max() < 0.05 and (picked == best).float().mean() >= 0.95


def stepwise_logits(decoder, ids, T):
    """The logits ``decoder``'s own steps give after each token of ``ids`` (B, n) from position T - 1 on."""
    B, n = ids.shape
    decoder.key_ok[:B] = True
    decoder.padded = False
    logits = [decoder.prefill(ids[:, :T], torch.ones(B, T, dtype=torch.long), torch.arange(T).expand(B, T))]
    for at in range(T, n - 1):
        logits.append(decoder.decode_one_token(ids[:, at : at + 1], torch.full((B, 1), at), at))
    return torch.stack(logits, 1)


def test_matrix_for_c_sums_each_rows_int8_weights():
    q = torch.tensor([[127, -127, 5], [-1, -2, -3]], dtype=torch.int8)
    weight, scale, row_sum, bias = native.matrix_for_c(q, torch.ones(2), torch.tensor([0.5, 2.0]))
    assert weight is q and scale.tolist() == [0.5, 2.0] and bias.tolist() == [1.0, 1.0]
    assert row_sum.dtype == torch.int32 and row_sum.tolist() == [5, -6]
    w = q.float()
    as_read = native.matrix_for_c(w, None)
    assert as_read[0] is w and as_read[1:] == [None, None, None]


@needs_native
def test_matvec_is_the_steps_weight_stream_alone():
    w, x = torch.randn(100, 48), torch.randn(48)  # 100 rows: 16 at a time, then 4 one by one (per thread)
    torch.testing.assert_close(native.matvec(w, x), w @ x, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"w must be a contiguous 2-D float32 CPU tensor, got \(48, 100\) "
                                         r"torch.float32 on cpu with strides \(1, 48\)"):
        native.matvec(w.t(), x[:1].expand(100).contiguous())
    with pytest.raises(ValueError, match="x must have w's 48 columns, got 47"):
        native.matvec(w, x[:47])


@needs_native
def test_a_library_that_will_not_load_is_a_reason_too(monkeypatch, tmp_path, built_here):
    target = copying_compiler(tmp_path, built_here, monkeypatch)

    def refuse(path):
        raise OSError("libgomp.so.1: cannot open shared object file")

    monkeypatch.setattr(native.ctypes, "CDLL", refuse)
    assert native.unavailable_reason() == f"cannot load {target}: libgomp.so.1: cannot open shared object file"


# A library at the cache path is loaded only when it is provably the one built here. Each test below gets
# a cache of its own (MINIGPT_CACHE) and a "compiler" that copies a library built once for this module,
# so that a rebuild costs a copy rather than seconds of compiling.

@pytest.fixture(scope="module")
def built_here(tmp_path_factory):
    """A C step library built by minigpt on this machine (a file of its own, in a temporary directory)."""
    lib = native.load()
    here = tmp_path_factory.mktemp("built") / "decode_step.so"
    if os.path.exists(lib._name):
        shutil.copyfile(lib._name, here)
    else:  # the shared cache was not ours: it was built in a private directory, removed once loaded
        directory = here.parent / "cache"
        native._build(native.compiler(), tuple(native.build_flags()), layout.header(), directory)
        shutil.copyfile(directory / native.library_name(native.compiler(), native.build_flags(), layout.header()), here)
    return here


def copying_compiler(tmp_path, built, monkeypatch):
    """Point $CC at a script that "builds" by copying ``built`` (appending to tmp_path/builds.log), and
    $MINIGPT_CACHE at tmp_path/cache; the path the library will be cached at."""
    cc = tmp_path / "cc"
    cc.write_text(f'#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\ncp {built} "$2" && echo built >> {tmp_path}/builds.log\n')
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "native" / native.library_name(str(cc), native.build_flags(), layout.header())


def builds(tmp_path):
    log = tmp_path / "builds.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Two libraries that are not the C step: one whose constructor writes the file ``ran`` beside it as
    soon as it is opened, one with no constructor and no function of the step's."""
    cc = native.compiler()
    if cc is None or shutil.which(cc) is None:
        pytest.skip("no C compiler here")
    where = tmp_path_factory.mktemp("planted")
    (where / "constructor.c").write_text(
        '#include <stdio.h>\n__attribute__((constructor)) static void planted(void) '
        f'{{ FILE *f = fopen("{where / "ran"}", "w"); if (f) fclose(f); }}\n')
    (where / "empty.c").write_text("int not_the_step = 1;\n")
    for name in ("constructor", "empty"):
        subprocess.run([cc, "-shared", "-fPIC", str(where / f"{name}.c"), "-o", str(where / f"{name}.so")], check=True)
    # the planted constructor does run when the library is opened (in another process): the tests can fail
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(where / 'constructor.so')!r})"], check=True)
    assert (where / "ran").exists()
    (where / "ran").unlink()
    return where


def record_for(library):
    """What a build writes beside ``library``: its sha256 and size (a forged record, when planted)."""
    data = library.read_bytes()
    native._record(library).write_text(f"{native.hashlib.sha256(data).hexdigest()} {len(data)}\n")


def assert_right_tokens(native_step):
    """FastDecoder's greedy tokens (on the tiny preset) are the readable loop's, in C or in torch's step."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 5))
    decoder = FastDecoder(model, max_batch_size=1, max_len=32)
    assert (decoder.native_step is not None) == native_step
    assert torch.equal(decoder.generate(ids, max_new_tokens=12).ids, generate(model, ids, max_new_tokens=12).ids)


@needs_native
@pytest.mark.parametrize("plant", ["constructor", "truncated", "empty"])
def test_a_library_that_is_not_the_builds_is_rebuilt_before_it_is_opened(monkeypatch, tmp_path, built_here,
                                                                         planted, plant):
    target = copying_compiler(tmp_path, built_here, monkeypatch)
    assert native.available() and builds(tmp_path) == 1 and native.untrusted(target) is None
    native._build.cache_clear()  # a new process, as far as loading goes
    # a new file in its place (this process has the old one mapped: cutting that short would SIGBUS here)
    target.unlink()
    if plant == "truncated":  # the build's own library, cut short (its record kept): opening it would SIGBUS
        target.write_bytes(built_here.read_bytes()[:4096])
    else:  # a library someone put at the (computable) cache path, with no record of a build
        shutil.copyfile(planted / f"{plant}.so", target)
        native._record(target).unlink()
    record = native._record(target)
    assert native.untrusted(target) == (f"{target} is not the library built here (its sha256 or size is not the "
                                        f"one in {record.name})" if plant == "truncated" else
                                        f"no {record} (the record of a build) beside it")
    assert native.unavailable_reason() is None and builds(tmp_path) == 2  # rebuilt, then opened
    assert target.read_bytes() == built_here.read_bytes() and native.untrusted(target) is None
    assert_right_tokens(native_step=True)
    assert not (planted / "ran").exists()


@needs_native
@pytest.mark.parametrize("shared", ["world-writable", "another user's"])
def test_a_cache_others_can_write_is_not_read_the_build_is_private(monkeypatch, tmp_path, built_here, planted,
                                                                   shared):
    target = copying_compiler(tmp_path, built_here, monkeypatch)
    target.parent.mkdir(parents=True)
    shutil.copyfile(planted / "constructor.so", target)
    record_for(target)  # whoever can write the directory can write a matching record too
    if shared == "world-writable":
        target.parent.chmod(0o777)
    else:
        monkeypatch.setattr(native.os, "geteuid", lambda: os.stat(target.parent).st_uid + 1)
    assert (native.untrusted(target) is None) == (shared == "world-writable")  # the file alone looks ours, or not
    assert native.unavailable_reason() is None and builds(tmp_path) == 1  # built and opened elsewhere
    assert target.read_bytes() == (planted / "constructor.so").read_bytes()  # the shared directory left alone
    assert_right_tokens(native_step=True)
    assert not (planted / "ran").exists()


@needs_native
def test_a_recorded_library_without_the_step_is_a_reason_and_torch_decodes(model, monkeypatch, tmp_path,
                                                                           built_here, planted):
    target = copying_compiler(tmp_path, built_here, monkeypatch)
    target.parent.mkdir(parents=True, mode=0o700)
    shutil.copyfile(planted / "empty.so", target)
    record_for(target)  # recorded as this user's build (say, by hand): opened, and found lacking
    reason = native.unavailable_reason()
    assert reason == f"cannot load {target}: it has no function decode_step (minigpt.fast.layout.FUNCTIONS)"
    assert builds(tmp_path) == 0 and not native.available()
    with pytest.raises(ValueError, match="matmul='native' cannot run here: cannot load "):
        FastDecoder(model, max_batch_size=1, max_len=8, matmul="native")
    assert_right_tokens(native_step=False)
