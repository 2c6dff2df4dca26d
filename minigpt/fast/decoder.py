"""The fast path: the same tokens as ``generate.py``, with the tricks that make decoding fast.

``generate.py`` is the readable loop the chapters teach. This module is the switch you flip when speed
matters; it changes *how* the numbers are computed, never *which* token is picked (the tests check that
greedy tokens are identical). What each trick buys (measured on a quiet 2-core AVX-512 CPU, GPT-2 124M
shape, fp32, 16-token prompt, 32 new tokens; tokens/s include the prefill):

- **A decode step in C, on CPU** (``matmul="native"``, what ``"auto"`` picks for float32 wherever a C
  compiler with OpenMP is found): ``minigpt.fast.native`` compiles ``csrc/decode_step.c`` for the instructions
  torch says this CPU has and runs every layer of a step in one call. It streams each matrix 16 rows at
  a time, and between the weight streams does only a few kilobytes of arithmetic, where torch pays its
  per-op toll ~300 times a step (see "Few small ops per layer" below). On a 2-core Xeon (AVX-512) a GPT-2
  124M step took 5-10% less time than the torch step; the prompt's pass (a matrix-matrix product) stays
  in torch. With int8 weights it adds integer products (VNNI or AVX2), with the activations quantized
  exactly as fbgemm quantizes them, so it picks the tokens of torch's int8 step: there it made 1.5-2×
  the tokens/s of torch's int8 step, whose fbgemm calls each quantize and pack on their own.
- **A matmul that streams the weights at memory speed, on CPU, chosen by timing it** (``matmul="tuned"``,
  the torch step, and what ``"auto"`` picks where the C step cannot run). A batch-1 decode step
  multiplies one row by every weight matrix, ~0.5 GB of them, so it is bound by how fast the weights
  come from memory (chapter 12). Which kernel streams fastest depends on the CPU and the matrix: on an
  AMD EPYC (AVX-512) oneDNN's inner product (the kernel ``torch.compile``'s CPU freezing pass picks) read
  24-31 GB/s where MKL's ``F.linear`` read ~14; on a 2-core Xeon (AVX-512) it was the other way round at
  batch 1 for the block matrices (oneDNN 17-23 GB/s, MKL 24-42), and MKL itself streamed the (out, 768)
  matrices and the head 20-30% faster when they were stored (in, out). So ``matmul="auto"`` times oneDNN,
  BLAS and BLAS over the (in, out) layout on the decoder's own matrices, per matrix shape, once per
  batch size (``FastDecoder._tuned_linear``). oneDNN runs bf16 and fp16 only on CPUs that have them in
  hardware (AVX512-BF16, AVX512-FP16, AMX); ``choose_matmul`` asks the CPU (``onednn_supports``) and
  falls back to BLAS over the (in, out) layout elsewhere.
- **int8 weights** (``weights="int8"``): a quarter of the bytes per token, one scale per output channel
  (``minigpt.quantize``): decode steps in C (above) where it builds and the int8 kernel is "dynamic";
  the prompt's pass, and every step elsewhere, through fbgemm's int8 kernels where the CPU runs them.
- **A KV cache allocated once**, sized for the largest batch and length: no tensor grows while decoding
  and memory is known up front. It holds the same numbers as ``minigpt.kv_cache.KVCache``, laid out the
  way the QKV matmul produces them: per layer one (batch, position, 2·C) tensor, each position's key then
  its value, so one copy writes both.
- **Few small ops per layer**: a batch-1 step spends ~85% of its time in the matmuls, and the rest in
  ~25 small ops per layer that each cost several times more than usual, because every matmul streams
  megabytes through the CPU's caches and evicts what the next op needs (a layer norm took 40-50 µs right
  after a 9 MB matmul and 7-9 µs right after another layer norm). So activations stay (B·T, C) rows (every
  matmul a plain 2-D one), and keys and values are written with one copy instead of two.
- **Logits for the last position only**: prefill projects one row per sequence onto the 50257-word
  vocabulary, not T rows.
- **No host syncs in the loop**: tokens are picked on the device (argmax, or a draw from the softmax) and
  written into a pre-allocated output tensor; nothing calls ``.item()`` or ``.tolist()`` per step, so a
  GPU never waits for Python and Python never waits for the GPU. (With EOS on, the loop asks "has every
  row finished?" once every ``EOS_CHECK_EVERY`` steps.)
- **``torch.inference_mode``**: no autograd bookkeeping on any tensor.
- **Fused QKV**: one matmul for queries, keys and values (the model's ``c_attn`` already is one).
- **A static-shape decode step** (``static=True``): every step attends over the whole ``max_len`` cache
  with a mask that hides the positions not written yet, and writes its key and value at a position held
  in a tensor. Shapes and addresses never change, so ``torch.compile(mode="reduce-overhead",
  fullgraph=True)`` can record the step once as a CUDA graph and replay it: one launch instead of ~150
  per token, which is where a small model's time goes on a GPU.

>>> from minigpt.model import GPT, GPTConfig
>>> model = GPT(GPTConfig.from_preset("tiny"))
>>> decoder = FastDecoder(model, max_batch_size=2, max_len=16)
>>> decoder.generate(torch.tensor([[6109, 3626, 6100, 345]]), max_new_tokens=3).shape
torch.Size([1, 7])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minigpt import logits as L
from minigpt.checks import check_choice
from minigpt.generate import PAD_TOKEN_ID, as_eos_ids, check_id_prompt, make_generator
from minigpt.model import GPT
from minigpt.fast.native import NativeStep, matrix_for_c, unavailable_reason
from minigpt.quantize import Int8Linear, choose_int8_kernel

EOS_CHECK_EVERY = 16  # with EOS on: steps between the (host-syncing) checks that every row has finished
MATMULS = ("auto", "native", "tuned", "onednn", "blas-in-out", "blas")
WEIGHTS = ("float", "int8")  # float: the decoder's dtype; int8: Int8Linear matrices, float32 activations
TUNE_REPEATS = 5  # timed passes of each candidate kernel over the whole model, when "auto" picks by measurement
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)  # BLAS runs all; oneDNN: onednn_supports
# oneDNN's own answer to "does this CPU have the instructions for an inner product in this dtype?"
_ONEDNN_PROBES = {torch.bfloat16: ("bf16", "_is_mkldnn_bf16_supported"),
                  torch.float16: ("fp16", "_is_mkldnn_fp16_supported")}


def onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w, b)`` computed by oneDNN's inner product (CPU), the kernel ``torch.compile`` picks.

    >>> x, w = torch.randn(2, 8), torch.randn(3, 8)
    >>> torch.allclose(onednn_linear(x, w), F.linear(x, w), atol=1e-5)
    True
    """
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def _kernels() -> dict[str, Callable]:
    """The matmuls "auto" times against each other on CPU, by name.

    "onednn" and "blas" read nn.Linear's (out, in) layout; "blas-in-out" is ``F.linear`` over matrices
    stored (in, out) (``in_out_layout``), so the same call streams the other layout.
    """
    return {"onednn": onednn_linear, "blas": F.linear, "blas-in-out": F.linear}


IN_OUT = "blas-in-out"  # the one kernel of _kernels() that wants its matrices stored (in, out)


def in_out_layout(w: torch.Tensor) -> torch.Tensor:
    """A copy of an (out, in) matrix stored as (in, out), returned as an (out, in) view: same values.

    >>> v = in_out_layout(torch.arange(6.0).view(2, 3))
    >>> v.tolist(), v.stride()
    ([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], (1, 2))
    """
    return w.t().contiguous().t()


def onednn_supports(dtype: torch.dtype) -> bool:
    """Can oneDNN's inner product (``onednn_linear``) run ``dtype`` on this CPU? oneDNN is asked, never assumed.

    fp32 runs wherever torch was built with oneDNN. bf16 and fp16 need the CPU's help (AVX512-BF16,
    AVX512-FP16 or AMX); without it oneDNN cannot even build the kernel ("could not create a primitive
    descriptor"), so its own probes decide. fp64 it has no inner product for on any CPU.

    >>> onednn_supports(torch.float32) == torch.backends.mkldnn.is_available()
    True
    >>> onednn_supports(torch.float64)
    False
    """
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    if dtype in _ONEDNN_PROBES:
        return bool(getattr(torch.ops.mkldnn, _ONEDNN_PROBES[dtype][1])())
    return False


def _onednn_lacks(dtype: torch.dtype) -> str:
    """What keeps oneDNN's inner product from running ``dtype`` here, with the call that tells."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    if dtype in _ONEDNN_PROBES:
        name, probe = _ONEDNN_PROBES[dtype]
        return f"this CPU's oneDNN has no {name} inner product (torch.ops.mkldnn.{probe}() is False)"
    return f"oneDNN has no {dtype} inner product"


def _check_dtype(dtype: object, *, none_ok: bool = False) -> None:
    """Raise unless ``dtype`` is one of ``DTYPES`` (or None, with ``none_ok``): a string is not a dtype."""
    allowed = f"one of {', '.join(map(str, DTYPES))}" + (" or None" if none_ok else "")
    if dtype is None and none_ok:
        return
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be {allowed}, got {dtype!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be {allowed}, got {dtype!r}")


def _check_int8(weights: object, device: torch.device, dtype: torch.dtype, compile: bool, matmul: str) -> None:
    """Raise unless ``weights`` is one of ``WEIGHTS`` and, for "int8", the rest of the decoder allows it."""
    check_choice("weights", weights, WEIGHTS)
    if weights != "int8":
        return
    problems = ((device.type != "cpu", f"int8 weights run on CPU only, got device {device.type!r}"),
                (dtype != torch.float32, f"int8 weights compute in float32, got dtype={dtype}"),
                (compile, "int8 weights cannot be compiled (torch.compile has no int8 kernels here)"),
                (matmul != "auto", f"int8 weights bring their own kernel (int8_kernel=), got matmul={matmul!r}"))
    for wrong, why in problems:
        if wrong:
            raise ValueError(f"weights='int8': {why}")


def _check_bool(name: str, value: object, *, none_ok: bool = False) -> None:
    """Raise unless ``value`` is True or False (or None, with ``none_ok``): 1, "no" and tensors are not."""
    if not (isinstance(value, bool) or (none_ok and value is None)):
        raise TypeError(f"{name} must be True or False{' or None' if none_ok else ''}, got {value!r}")


def choose_matmul(
    matmul: str, device: torch.device, compile: bool = False, *, dtype: torch.dtype = torch.float32,
    static: bool = False,
) -> str:
    """Resolve ``"auto"`` to the matmul that runs ``dtype`` fastest on ``device``; refuse one that cannot run.

    On CPU, ``"auto"`` is ``"native"`` for float32 decoding with the sliced cache (not ``static``, nothing
    compiled) wherever the C decode step builds (``minigpt.fast.native``: it needs a C compiler with OpenMP).
    Otherwise it is ``"tuned"`` where oneDNN has an inner product for ``dtype`` on this CPU
    (``onednn_supports``: fp32 wherever the build has oneDNN, bf16 and fp16 only with hardware support) and
    nothing is compiled: the decoder then times oneDNN, BLAS and BLAS over the (in, out) layout on its own
    weights, at each batch size on first use, and keeps the fastest (which one wins differs from CPU to
    CPU, from shape to shape, and between batch 1 and batch 8). Elsewhere it is BLAS over the (in, out)
    layout (under ``compile``, whose CPU backend brings its own matmuls, too); on GPUs it is ``"blas"``.
    An explicit ``"onednn"`` that cannot run is a ``ValueError`` that names what is missing, here rather
    than as a oneDNN error at the first matmul.

    >>> choose_matmul("auto", torch.device("cuda"))
    'blas'
    >>> choose_matmul("auto", torch.device("cpu"), dtype=torch.float64)  # oneDNN has no fp64 kernel
    'blas-in-out'
    """
    check_choice("matmul", matmul, MATMULS)
    _check_bool("compile", compile)
    _check_bool("static", static)
    _check_dtype(dtype)
    if device.type != "cpu":
        if matmul not in ("auto", "blas"):
            raise ValueError(f"matmul must be 'auto' or 'blas' on {device.type}, got {matmul!r}")
        return "blas"  # cuBLAS reads either layout at full speed
    if compile and matmul == "onednn":
        raise ValueError("matmul='onednn' cannot be compiled (torch.compile lowers matmuls itself); "
                         "use 'auto', 'blas-in-out' or 'blas'")
    if matmul in ("onednn", "tuned") and not onednn_supports(dtype):
        raise ValueError(f"matmul={matmul!r} cannot run here: {_onednn_lacks(dtype)}; "
                         "use matmul='auto' or 'blas-in-out'")
    native_lacks = _native_lacks(compile, dtype, static) if matmul in ("native", "auto") else "not asked for"
    if matmul == "native" and native_lacks:
        raise ValueError(f"matmul='native' cannot run here: {native_lacks}; use matmul='auto' or 'blas-in-out'")
    if matmul == "tuned" and compile:
        raise ValueError("matmul='tuned' cannot be compiled (it times eager kernels); use 'auto' or 'blas-in-out'")
    if matmul == "auto":
        return "native" if not native_lacks else "tuned" if not compile and onednn_supports(dtype) else "blas-in-out"
    return matmul


def _native_lacks(compile: bool, dtype: torch.dtype, static: bool) -> str | None:
    """What keeps the C decode step (``minigpt.fast.native``) from running this decoder, or None."""
    if dtype != torch.float32:
        return f"the C decode step computes in float32, got dtype={dtype}"
    if compile or static:
        return "the C decode step is eager and reads the sliced cache (compile=False, static=False)"
    return unavailable_reason()


@dataclass
class _BlockWeights:
    """One transformer block's tensors; each matrix is an (out, in) tensor in the layout its matmul wants."""

    ln_1: tuple[torch.Tensor, torch.Tensor]
    c_attn: tuple[torch.Tensor, torch.Tensor]
    attn_proj: tuple[torch.Tensor, torch.Tensor]
    ln_2: tuple[torch.Tensor, torch.Tensor]
    c_fc: tuple[torch.Tensor, torch.Tensor]
    mlp_proj: tuple[torch.Tensor, torch.Tensor]


def _copy(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.detach().to(dtype, copy=True)


def _block_weights(block: torch.nn.Module, dtype: torch.dtype, matrix: Callable) -> _BlockWeights:
    """One block's norms copied in ``dtype``; each linear layer as ``matrix(layer)`` makes it."""
    def norm(m):
        return _copy(m.weight, dtype), _copy(m.bias, dtype)

    return _BlockWeights(
        norm(block.ln_1), matrix(block.attn.c_attn), matrix(block.attn.c_proj),
        norm(block.ln_2), matrix(block.mlp.c_fc), matrix(block.mlp.c_proj),
    )


def _native(matrix: tuple) -> list[torch.Tensor | None]:
    """A (weight, bias) or (Int8Linear,) matrix as the C step reads it (``minigpt.fast.native.matrix_for_c``)."""
    if isinstance(matrix[0], Int8Linear):
        return matrix_for_c(matrix[0].q, matrix[0].bias, matrix[0].scale)
    return matrix_for_c(*matrix)


def _int8_linear(x: torch.Tensor, layer: Int8Linear) -> torch.Tensor:
    """The int8 decoder's matmul: each matrix is an ``Int8Linear`` holding its own scales and bias."""
    return layer(x)


class FastDecoder:
    """Greedy and sampled decoding of a ``GPT`` with a pre-allocated cache and a capturable step.

    The decoder holds its own copy of the weights (in ``dtype``, default the model's) and a KV cache
    (``self.cache``: per layer, keys and values side by side) for ``max_batch_size`` rows of ``max_len``
    positions (prompt + new tokens; default the model's context), allocated here once.
    The model passed in is not modified.

    ``compile=True`` wraps the decode step in ``torch.compile(fullgraph=True)``, with
    ``mode="reduce-overhead"`` (CUDA graphs) on CUDA. Leave it off on CPU: there it bought nothing
    measurable (34.0 tokens/s compiled, 34.5 eager, both with the BLAS matmul), the first call spends
    ~20 s compiling, and the compiled graph cannot use the faster oneDNN kernel.

    ``static`` picks the static-shape step (attend over all ``max_len`` positions, masked); it defaults to
    ``compile``, because CUDA graphs need it and eager mode does not: without a graph, attending only over
    the filled positions (the *sliced* cache) reads less of the cache (at batch 32, 256 new tokens, about
    half of it) and costs nothing, since the length is a Python int the loop already knows.

    ``matmul`` picks the kernel of every weight matrix (see the module docstring for what each buys):
    ``"native"`` (CPU, float32, sliced cache: every decode step in C, ``minigpt.fast.native``; ``self.native_step``;
    the prompt's pass with ``F.linear``), ``"tuned"`` (CPU: each matrix shape's fastest of the next three,
    timed), ``"onednn"`` (CPU: oneDNN's inner product over nn.Linear's (out, in) layout), ``"blas-in-out"`` (CPU:
    ``F.linear`` over weights stored (in, out)), ``"blas"`` (``F.linear`` over nn.Linear's layout, the
    readable model's way), or ``"auto"``: ``"native"`` where it can run (float32, ``static`` off, and the C
    step builds here); else, where this CPU's oneDNN has ``dtype`` (fp32 wherever torch has
    oneDNN; bf16 and fp16 only with AVX512-BF16/FP16 or AMX, as ``onednn_supports`` asks) and nothing is
    compiled, ``"tuned"``: per matrix shape, oneDNN, BLAS or BLAS over matrices stored (in, out),
    whichever was fastest when timed on the first call of each batch size (``self.tuned`` shows the
    choice, ``tuned_layout`` the layout; pass a kernel by name for bit-identical runs from one process to
    the next); else ``"blas-in-out"``; ``"blas"`` on GPUs. ``"onednn"`` where it
    cannot run is a ValueError.
    ``dtype`` is one of ``DTYPES`` (a ``torch.dtype``, not its name).

    ``weights="int8"`` (CPU, float32) stores every matrix, the tied output head included, as int8 with one
    scale per output channel (``minigpt.quantize.Int8Linear``): a quarter of the bytes each token reads.
    ``int8_kernel`` picks how the products run, ``"dynamic"`` (fbgemm: activations quantized on the fly)
    or ``"weight-only"``; ``"auto"`` times both on this CPU (``choose_int8_kernel``). With "dynamic" and
    the C step available (as for ``matmul="native"``), decode steps run in C, quantizing as fbgemm does.
    The token table stays float32 for the lookup, which reads one row per token.

    >>> from minigpt.model import GPT, GPTConfig
    >>> decoder = FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=1, max_len=8)
    >>> decoder.cache[0].shape  # per layer: batch, positions, a key and a value of n_embd numbers each
    torch.Size([1, 8, 128])
    """

    def __init__(
        self,
        model: GPT,
        max_batch_size: int,
        max_len: int | None = None,
        *,
        dtype: torch.dtype | None = None,
        compile: bool = False,
        static: bool | None = None,
        matmul: str = "auto",
        weights: str = "float",
        int8_kernel: str = "auto",
    ) -> None:
        c = model.config
        max_len = c.block_size if max_len is None else max_len
        for name, value, high in (("max_batch_size", max_batch_size, None), ("max_len", max_len, c.block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high and value > high):
                allowed = f"an integer in [1, {high}] (the model's context)" if high else "an integer >= 1"
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
        _check_dtype(dtype, none_ok=True)
        _check_bool("static", static, none_ok=True)
        wte = model.transformer.wte.weight.detach()
        self.config, self.device = c, wte.device
        self.dtype = wte.dtype if dtype is None else dtype
        self.max_batch_size, self.max_len = max_batch_size, max_len
        self.n_head, self.head_size = c.n_head, c.n_embd // c.n_head
        self.static = compile if static is None else static
        # checks matmul and compile too, so every check is done before the first copy below
        self.matmul = choose_matmul(matmul, self.device, compile, dtype=self.dtype, static=self.static)
        _check_int8(weights, self.device, self.dtype, compile, matmul)
        native = self.matmul == "native"
        self.tuned: dict[int, dict] = {}  # matmul "tuned": batch size -> {(in, out): the kernel timed fastest}
        self.int8_kernel = None
        layout = in_out_layout if self.matmul == "blas-in-out" else (lambda w: w)
        if weights == "int8":
            self.int8_kernel = choose_int8_kernel(int8_kernel, model.transformer.h[0].mlp.c_fc.weight.detach())
            # the C step quantizes activations as fbgemm's "dynamic" kernel does; "weight-only" stays in torch
            native = native and self.int8_kernel == "dynamic"
            self.matmul, self.linear = "int8", _int8_linear

            def matrix(m):
                return (Int8Linear(m.weight.detach(), m.bias, self.int8_kernel),)
        else:
            self.linear = onednn_linear if self.matmul in ("onednn", "tuned") else F.linear

            def matrix(m):
                return layout(_copy(m.weight, self.dtype)), _copy(m.bias, self.dtype)
        # the tied matrix, copied once: the embedding lookup and the output head read the same storage
        # (int8: the head reads its own int8 copy, the lookup the float32 table)
        self.wte = layout(_copy(wte, self.dtype))
        self.head = (Int8Linear(wte, None, self.int8_kernel),) if weights == "int8" else (self.wte,)
        self.wpe = _copy(model.transformer.wpe.weight, self.dtype)
        self.blocks = [_block_weights(b, self.dtype, matrix) for b in model.transformer.h]
        self.ln_f = _copy(model.transformer.ln_f.weight, self.dtype), _copy(model.transformer.ln_f.bias, self.dtype)
        # the KV cache: per layer one (max_batch_size, max_len, 2C) tensor, each position's key then its value,
        # as the QKV matmul lays them out, so one copy writes both
        self.cache = [torch.zeros(max_batch_size, max_len, 2 * c.n_embd, dtype=self.dtype, device=self.device)
                      for _ in range(c.n_layer)]
        # per call: which cache positions hold real tokens (False over each row's left padding)
        self.key_ok = torch.ones(max_batch_size, 1, 1, max_len, dtype=torch.bool, device=self.device)
        self.key_pos = torch.arange(max_len, device=self.device)
        self.padded = True  # does any row of the current call hold left padding? (set by generate)
        self.cache_pos = torch.zeros(1, dtype=torch.long, device=self.device)  # static step: where to write
        self.out = torch.zeros(max_batch_size, max_len, dtype=torch.long, device=self.device)  # the tokens
        self.native_step = self._native_step() if native else None
        self._step = self._compiled_step() if compile else self._static_step

    def _native_step(self) -> NativeStep:
        """The C decode step (``minigpt.fast.native``) over this decoder's own weights and cache; prefill stays here."""
        layers = [[*b.ln_1, *_native(b.c_attn), *_native(b.attn_proj), *b.ln_2, *_native(b.c_fc), *_native(b.mlp_proj),
                   cache] for b, cache in zip(self.blocks, self.cache)]
        head = _native((*self.head, None))[:3]  # the head's matrix, and for int8 its scales and rows' sums
        qmax = 127 if isinstance(self.head[0], Int8Linear) and self.head[0].reduce_range else 255  # as fbgemm
        return NativeStep(layers, self.wte, self.wpe, self.ln_f, *head, self.n_head, self.max_batch_size,
                          self.max_len, qmax)

    def _compiled_step(self):
        """``_static_step`` under torch.compile; CUDA graphs need every buffer it touches at a fixed address."""
        for t in self._tensors():
            torch._dynamo.mark_static_address(t)  # weights and cache: never copied into graph inputs
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        return torch.compile(self._static_step, mode=mode, fullgraph=True)

    def _tensors(self) -> list[torch.Tensor]:
        blocks = [t for b in self.blocks for pair in vars(b).values() for t in pair]
        return [self.wte, self.wpe, *self.ln_f, *blocks, *self.cache]

    # --- the model, as functions of the copied weights ----------------------------------------------

    def _forward(
        self, idx: torch.Tensor, positions: torch.Tensor, at: slice | torch.Tensor, kv_len: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Next-token logits (B, V) for the last of the (B, T) ``idx``; keys and values go to cache ``at``.

        ``kv_len`` is how many cache positions to attend over and ``mask`` (B, 1, T, kv_len) which of them
        each query may see (None: all of them).
        """
        B, T = idx.shape
        # (B·T, C): one row per token, so every matmul is a plain 2-D one (no folding of batch dims per call)
        x = (F.embedding(idx, self.wte) + F.embedding(positions, self.wpe)).flatten(0, 1)
        row = x.shape[1:]  # (C,): what each layer norm normalizes over
        for cache, w in zip(self.cache, self.blocks):
            x = x + self._attention(F.layer_norm(x, row, *w.ln_1), w, cache[:B], at, kv_len, mask)
            h = F.gelu(self.linear(F.layer_norm(x, row, *w.ln_2), *w.c_fc), approximate="tanh")
            x = x + self.linear(h, *w.mlp_proj)
        x = F.layer_norm(x[T - 1 :: T], row, *self.ln_f)  # each sequence's last position only: (B, C)
        return self.linear(x, *self.head)  # (B, V)

    def _attention(
        self, x: torch.Tensor, w: _BlockWeights, cache: torch.Tensor, at: slice | torch.Tensor, kv_len: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention of the (B·T, C) rows ``x``, whose keys and values go to ``cache`` (B, max_len, 2C) ``at``."""
        (B, _, C2), nh, hs = cache.shape, self.n_head, self.head_size
        C, T = C2 // 2, x.shape[0] // B
        qkv = self.linear(x, *w.c_attn).view(B, T, 3 * C)  # fused QKV: one matmul, then q | k | v per token
        cache[:, at] = qkv[:, :, C:]  # keys and values in one copy, in place: the cache never grows or moves
        q = qkv[:, :, :C].view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = cache[:, :kv_len, :C].view(B, kv_len, nh, hs).transpose(1, 2)  # (B, nh, kv_len, hs)
        v = cache[:, :kv_len, C:].view(B, kv_len, nh, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        return self.linear(y.transpose(1, 2).reshape(B * T, C), *w.attn_proj)

    def _static_step(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache_pos: torch.Tensor, key_ok: torch.Tensor
    ) -> torch.Tensor:
        """One token per row at cache position ``cache_pos`` (a (1,) tensor): same shapes every step."""
        mask = key_ok & (self.key_pos <= cache_pos)  # (B, 1, 1, max_len): real tokens written so far
        return self._forward(tokens, positions, cache_pos, self.max_len, mask)

    # --- prefill and decode -------------------------------------------------------------------------

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Run the (B, T) prompt, fill cache positions [0, T), return the next-token logits (B, V)."""
        B, T = ids.shape
        attn = GPT._attention_mask(mask, B, T, 0, ids.device)  # the eager model's mask, pads included
        return self._forward(ids, positions, slice(0, T), T, attn)

    def decode_one_token(self, tokens: torch.Tensor, positions: torch.Tensor, length: int) -> torch.Tensor:
        """Logits (B, V) after feeding ``tokens`` (B, 1) at cache position ``length`` (positions filled so far)."""
        B = tokens.size(0)
        if self.native_step is not None:
            return self.native_step(tokens, positions, length, self.key_ok[:B, 0, 0] if self.padded else None)
        if self.static:
            self.cache_pos.fill_(length)  # a scalar written on the device: no host-device copy, no sync
            return self._step(tokens, positions, self.cache_pos, self.key_ok[:B])
        end = length + 1  # sliced: attend over the filled positions only
        # one query sees every filled position: only left padding needs hiding, and without any, no mask at
        # all lets attention skip the masking work (2 of ~20 small ops a layer)
        mask = self.key_ok[:B, :, :, :end] if self.padded else None
        return self._forward(tokens, positions, slice(length, end), end, mask)

    @torch.inference_mode()
    def generate(
        self,
        ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Prompt ids (B, T), left-padded with ``attention_mask`` if rows differ, to ids (B, T + new).

        Greedy tokens are those of ``minigpt.generate.generate(model, ids, attention_mask=...,
        max_new_tokens=...).ids``, and so is the layout: after a row's EOS come ``PAD_TOKEN_ID`` s, and the
        result ends when every row has ended. Sampling (``do_sample=True``) supports ``temperature``,
        ``top_k``, ``top_p`` and ``min_p``, applied by ``minigpt.logits``, and draws like the eager loop:
        without EOS, the same ``seed`` gives the same tokens in both. The other logits transforms
        (repetition penalty, n-gram bans, ...) need the readable loop.

        >>> from minigpt.model import GPT, GPTConfig
        >>> decoder = FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=2, max_len=16)
        >>> ids = torch.tensor([[50256, 15496], [6109, 3626]])
        >>> decoder.generate(ids, torch.tensor([[0, 1], [1, 1]]), max_new_tokens=4, do_sample=True, seed=0).shape
        torch.Size([2, 6])
        """
        ids, mask = check_id_prompt(ids, attention_mask, self.config.vocab_size)
        B, T = ids.shape
        self._check_call(B, T, max_new_tokens)
        _check_bool("do_sample", do_sample)  # "no" would be truthy: it would sample when asked not to
        L.check_logits_settings(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.matmul == "tuned":
            self.linear = self._tuned_linear(B)
        sample = dict(do_sample=do_sample and temperature != 0, temperature=temperature, top_k=top_k,
                      top_p=top_p, min_p=min_p)
        rng = make_generator(seed, generator, self.device)
        eos = torch.tensor(as_eos_ids(eos_token_id), dtype=torch.long, device=self.device)
        out = self.out[:B]
        out[:, :T] = ids
        self.key_ok[:B, 0, 0, :T] = mask.bool()
        self.padded = not bool(mask.all())  # one host sync per call, not per step
        self.key_ok[:B, 0, 0, T:] = True  # every new token is real
        # positions count real tokens only, as in generate.py: a padded row starts at 0 like any other
        positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
        logits = self.prefill(ids, mask, positions)
        positions = positions[:, -1:] + 1  # (B, 1): the next token's position in each row
        done = torch.zeros(B, dtype=torch.bool, device=self.device)  # rows that emitted EOS
        last = torch.full((B,), max_new_tokens - 1, device=self.device)  # the step each row ended at
        for step in range(max_new_tokens):
            if step > 0:
                logits = self.decode_one_token(out[:, T + step - 1 : T + step], positions, T + step - 1)
                positions += 1
            tokens = self._pick(logits, out[:, : T + step], step, sample, rng)
            if len(eos):
                tokens = tokens.masked_fill(done, PAD_TOKEN_ID)  # a finished row only pads
                ended = ~done & torch.isin(tokens, eos)
                last = last.masked_fill(ended, step)
                done |= ended
            out[:, T + step] = tokens  # on the device: no .item(), no host sync
            if len(eos) and (step + 1) % EOS_CHECK_EVERY == 0 and done.all():
                break
        n = int(last.max()) + 1 if len(eos) else max_new_tokens  # the one host sync, after the loop
        return out[:, : T + n].clone()  # a copy: the next call reuses the buffer

    def _tuned_linear(self, batch_size: int) -> Callable:
        """The matmul for calls of ``batch_size`` rows: per matrix shape, the kernel that is fastest here.

        Timed once per batch size, on first use (``_timed_passes``), for each shape (QKV, attention output,
        MLP up, MLP down, the head) and each candidate of ``_kernels()``. ``self.tuned[batch_size]``
        records the choice, (in, out) → kernel name. The first batch size timed also fixes each shape's
        layout: where "blas-in-out" wins, the matrices of that shape are stored (in, out) from then on and
        later batch sizes keep that kernel; elsewhere they choose between "onednn" and "blas". While the
        first timing runs, an (in, out) copy of every matrix is alive beside the decoder's own (about
        500 MB more for GPT-2 124M in fp32, for a second or so).

        Why three: at batch 1 a matmul streams each matrix's rows, and how fast depends on the row length
        and the kernel. On a 2-core Xeon (AVX-512), MKL read the 768-number rows of the (out, 768)
        matrices and of the head at 14-15 GB/s on one thread, the same matrices stored (in, out) at 16-19,
        while the MLP's down projection (3072-number rows) was fastest as it is; oneDNN read the block
        matrices at 17-26 GB/s with two threads and BLAS at 24-33, while on the AMD EPYC of the README's
        table oneDNN was the faster. No rule fits every CPU, so each one is timed.
        """
        kernels = _kernels()  # looked up at each call, so a test can slow one down
        if batch_size not in self.tuned:
            first = not self.tuned
            slots = self._matrix_slots()
            names = {shape: [*kernels] if first else [IN_OUT] if self.tuned_layout(shape) == "in-out"
                     else [n for n in kernels if n != IN_OUT] for shape in slots}
            matrices = {(shape, n): self._matrices_for(n, slots[shape]) for shape in slots for n in names[shape]}
            seconds = self._timed_passes(kernels, names, matrices, batch_size)
            choice = {shape: min(names[shape], key=lambda n, s=shape: seconds[s, n]) for shape in slots}
            if first:
                for shape, name in choice.items():
                    if name == IN_OUT:
                        self._store(slots[shape], matrices[shape, name])
            self.tuned[batch_size] = choice
        chosen = {shape: kernels[name] for shape, name in self.tuned[batch_size].items()}
        return lambda x, w, b=None: chosen[w.shape[1], w.shape[0]](x, w, b)

    def _timed_passes(self, kernels: dict, names: dict, matrices: dict, batch_size: int) -> dict:
        """Seconds of each (shape, kernel) over every matrix of that shape: the fastest of ``TUNE_REPEATS``.

        Each pass runs every shape once, so it streams the whole model, as a decode step does: timing one
        shape's matrices over and over would read them from a large last-level cache (300 MiB on the
        2-core Xeon, more than any one shape's matrices) rather than from memory. The candidates take
        turns from pass to pass, so a slow spell of the machine does not single out one of them; the
        first round warms up.
        """
        xs = {shape: torch.randn(batch_size, shape[0], dtype=self.dtype, device=self.device) for shape in names}
        rounds = max(len(n) for n in names.values())
        best: dict[tuple, float] = {}
        for p in range(rounds * (TUNE_REPEATS + 1)):
            for shape, candidates in names.items():
                name = candidates[p % len(candidates)]
                start = time.perf_counter()
                for w, *b in matrices[shape, name]:
                    kernels[name](xs[shape], w, *b)
                if p >= rounds:
                    best[shape, name] = min(best.get((shape, name), float("inf")), time.perf_counter() - start)
        return best

    def tuned_layout(self, shape: tuple[int, int]) -> str | None:
        """How matmul "tuned" stores the matrices of ``shape`` (in, out): "in-out", "out-in", or None before tuning.

        >>> from minigpt.model import GPT, GPTConfig
        >>> FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=1).tuned_layout((64, 64)) is None
        True
        """
        first = next(iter(self.tuned.values()), None)  # the first batch size timed chose the layouts
        if first is None:
            return None
        return "in-out" if first[shape] == IN_OUT else "out-in"

    def _matrix_slots(self) -> dict[tuple[int, int], list[tuple[object, str]]]:
        """Where each weight matrix lives, by (in, out) shape: (holder, attribute) of its (weight, bias) tuple."""
        slots: dict[tuple[int, int], list] = {}
        holders = [(b, name) for b in self.blocks for name in ("c_attn", "attn_proj", "c_fc", "mlp_proj")]
        for holder, name in [*holders, (self, "head")]:
            w = getattr(holder, name)[0]
            slots.setdefault((w.shape[1], w.shape[0]), []).append((holder, name))
        return slots

    def _matrices_for(self, kernel: str, slots: list) -> list[tuple]:
        """The (weight, bias) tuples of ``slots`` in the layout ``kernel`` reads: copied (in, out) for "blas-in-out"."""
        stored = [getattr(holder, name) for holder, name in slots]
        if kernel != IN_OUT or stored[0][0].stride(0) == 1:  # already (in, out)
            return stored
        return [(in_out_layout(w), *rest) for w, *rest in stored]

    def _store(self, slots: list, matrices: list[tuple]) -> None:
        """Keep ``matrices`` in place of the tuples at ``slots``; the token table stays tied to the head."""
        for (holder, name), pair in zip(slots, matrices):
            setattr(holder, name, pair)
        self.wte = self.head[0]

    def _check_call(self, B: int, T: int, max_new_tokens: int) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if B > self.max_batch_size:
            raise ValueError(f"batch size must be <= max_batch_size={self.max_batch_size}, got {B}")
        if T + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt length + max_new_tokens must be <= max_len={self.max_len}, got {T} + {max_new_tokens}"
            )

    @staticmethod
    def _pick(
        logits: torch.Tensor, ids: torch.Tensor, step: int, sample: dict, rng: torch.Generator | None
    ) -> torch.Tensor:
        """One token per row, chosen on the device: argmax, or a draw as in ``generate._pick``."""
        scores = L.process_logits(logits.float(), ids, new_tokens=step, **sample)  # fp32, as the eager loop
        if not sample["do_sample"]:
            return scores.argmax(dim=-1)
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=rng).squeeze(1)

