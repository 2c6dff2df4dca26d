"""The fast path: the same tokens as ``generate.py``, with the tricks that make decoding fast.

``generate.py`` is the readable loop the chapters teach. This module is the switch you flip when speed
matters; it changes *how* the numbers are computed, never *which* token is picked (tests/test_fast.py and
tests/test_native.py check that greedy and seeded sampled tokens are identical). What each trick does and
why; what it buys on a given machine is measured by ``minigpt bench`` and logged in docs/performance.md:

- **A decode step in C, on CPU** (``matmul="native"``, what ``"auto"`` picks for float32 wherever a C
  compiler with OpenMP is found): ``minigpt.fast.native`` compiles ``csrc/decode_step.c`` for the
  instructions torch says this CPU has and runs every layer of a step in one call. It streams each matrix
  one row at a time, in memory order, and between the weight streams does only a few kilobytes of
  arithmetic, where torch pays its per-op toll for every small op (see "Few small ops per layer" below).
  The prompt's pass (a
  matrix-matrix product) stays in torch. With int8 weights it adds integer products (VNNI or AVX2), the
  activations quantized exactly as fbgemm quantizes them, so it picks the tokens of torch's int8 step
  without the quantizing and packing each of fbgemm's calls does on its own.
- **A matmul chosen by timing it, on CPU** (``matmul="tuned"``, the torch step, and what ``"auto"`` picks
  where the C step cannot run). A batch-1 decode step multiplies one row by every weight matrix, so it is
  bound by how fast the weights come from memory (chapter 12), and which kernel streams a matrix fastest
  depends on the CPU, the matrix's shape and its storage order. So the decoder times oneDNN, BLAS and BLAS
  over the (in, out) layout on its own matrices, per shape, once per batch size (``minigpt.fast.kernels``).
  oneDNN runs bf16 and fp16 only on CPUs that have them in hardware (AVX512-BF16, AVX512-FP16, AMX);
  ``choose_matmul`` asks the CPU and falls back to BLAS over the (in, out) layout elsewhere. Which
  options go together is one table, ``minigpt.fast.options.TABLE``.
- **int8 weights** (``weights="int8"``): a quarter of the bytes per token, one scale per output channel
  (``minigpt.quantize``): decode steps in C (above) where it builds and the int8 kernel is "dynamic";
  the prompt's pass, and every step elsewhere, through torch's int8 kernels.
- **16-bit and GGUF block weights** (``weights="fp16"``, ``"bf16"``, ``"q8_0"``, ``"q4_0"``): 2, 34/32
  and 18/32 bytes per weight where float32 reads 4: the matrices and the head stay in the format
  (the blocks are the very bytes a GGUF file holds, ``minigpt.quantize.gguf_blocks``) and the C step
  widens them to float32 in registers; activations, cache and logits stay float32, so the model computed
  is ``minigpt.quantize.round_weights(model, weights)`` (with Q8_0 and Q4_0, ``activations="q8_0"`` rounds
  each matrix's inputs to Q8_0 too, as llama.cpp does, and sums integer products instead of widening
  each weight). These have no torch step: the prompt too runs
  through the C step, all its positions in one call (``prefill``).
- **A KV cache allocated once**, sized for the largest batch and length: no tensor grows while decoding
  and memory is known up front. It holds the same numbers as ``minigpt.kv_cache.KVCache``, laid out the
  way the QKV matmul produces them: per layer one (batch, position, 2·C) tensor, each position's key then
  its value, so one copy writes both.
- **Few small ops per layer**: a batch-1 step spends most of its time in the matmuls, and the rest in
  about 25 small ops per layer that each cost more than their arithmetic, because every matmul streams
  megabytes through the CPU's caches and evicts what the next op needs. So activations stay (B·T, C) rows
  (every matmul a plain 2-D one), and keys and values are written with one copy instead of two.
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
  fullgraph=True)`` can record the step once as a CUDA graph and replay it: one launch per token instead
  of one per op, which is where a small model's time goes on a GPU.

>>> from minigpt.model import GPT, GPTConfig
>>> model = GPT(GPTConfig.from_preset("tiny"))
>>> decoder = FastDecoder(model, max_batch_size=2, max_len=16)
>>> decoder.generate(torch.tensor([[6109, 3626, 6100, 345]]), max_new_tokens=3).ids.shape
torch.Size([1, 7])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minigpt import logits as L
from minigpt.checks import check_type
from minigpt.fast import kernels
from minigpt.fast.kernels import IN_OUT, in_out_layout
from minigpt.fast.native import NativeStep, matrix_for_c
from minigpt.fast.options import C_ONLY, check_activations, check_bool, check_dtype, choose_matmul
from minigpt.generate import PAD_TOKEN_ID, Generation, as_eos_ids, check_id_prompt, make_generator
from minigpt.kv_cache import check_memory_fits
from minigpt.model import GPT, causal_mask, position_ids_from_mask
from minigpt.quantize import Int8Linear, choose_int8_kernel, gguf_blocks, quantize_q4_0, quantize_q8_0, round_matrix

EOS_CHECK_EVERY = 16  # with EOS on: steps between the (host-syncing) checks that every row has finished


@dataclass
class _BlockWeights:
    """One transformer block's tensors; each matrix is an (out, in) tensor in the layout its matmul wants.

    The field names and order are those of ``minigpt.fast.layout.LAYER``, which the C step reads.
    """

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


def _for_c(name: str, part: tuple) -> list[torch.Tensor | None]:
    """A block's ``name`` entry as the C step reads it: a norm's (weight, bias) as is, a (weight, bias) or
    (Int8Linear,) matrix as ``minigpt.fast.native.matrix_for_c`` lays it out."""
    if name.startswith("ln_"):
        return list(part)
    if isinstance(part[0], Int8Linear):
        return matrix_for_c(part[0].q, part[0].bias, part[0].scale)
    return matrix_for_c(*part)


def stored_as(w: torch.Tensor, weights: str) -> torch.Tensor:
    """An (out, in) matrix as the C step reads it in a ``C_ONLY`` format: float16 or bfloat16 (out, in), or
    for "q8_0" and "q4_0" GGUF's blocks, uint8 (out, in // 32 * 34 or 18): each block's float16 scale,
    then its codes (``minigpt.quantize.gguf_blocks``). The C step streams these bytes as they are.

    >>> stored_as(torch.ones(2, 64), "q4_0").shape, stored_as(torch.ones(2, 64), "bf16").dtype
    (torch.Size([2, 36]), torch.bfloat16)
    """
    w = w.detach().float()
    if weights in ("fp16", "bf16"):
        return w.to(torch.float16 if weights == "fp16" else torch.bfloat16).contiguous()
    quantize = quantize_q8_0 if weights == "q8_0" else quantize_q4_0
    return gguf_blocks(*quantize(w), weights).contiguous()


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
    ``mode="reduce-overhead"`` (CUDA graphs) on CUDA. On CPU it is for experiments: the first call spends
    a long time compiling, the compiled graph cannot use the C step, oneDNN's kernel or the tuner, and
    whether it buys anything there is a measurement (docs/performance.md).

    ``static`` picks the static-shape step (attend over all ``max_len`` positions, masked); it defaults to
    ``compile``, because CUDA graphs need it and eager mode does not: without a graph, attending only over
    the filled positions (the *sliced* cache) reads less of the cache (over a call that fills it, about
    half) and costs nothing, since the length is a Python int the loop already knows.

    Which options go together is ``minigpt.fast.options.TABLE``; a combination it refuses, or one this
    machine cannot run, is an ``UnsupportedOptions`` (a ValueError) raised here, before any copy.
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
    choice, ``tuned_layout`` the layout, ``linear_for`` the matmul a call runs; pass a kernel by name for
    bit-identical runs from one process to the next); else ``"blas-in-out"``; ``"blas"`` on GPUs.
    ``dtype`` is one of ``minigpt.fast.options.DTYPES`` (a ``torch.dtype``, not its name).

    ``weights="int8"`` (CPU, float32) stores every matrix, the tied output head included, as int8 with one
    scale per output channel (``minigpt.quantize.Int8Linear``): a quarter of the bytes each token reads.
    ``int8_kernel`` picks how the products run, ``"dynamic"`` (fbgemm: activations quantized on the fly)
    or ``"weight-only"``; ``"auto"`` times both on this CPU (``choose_int8_kernel``). With "dynamic" and
    the C step available, ``matmul`` is ``"native"``: decode steps run in C, quantizing as fbgemm does;
    otherwise it is ``"int8"``, every step in torch. The token table stays float32 for the lookup, which
    reads one row per token.

    ``weights="fp16"``, ``"bf16"``, ``"q8_0"`` or ``"q4_0"`` (CPU, float32, eager, sliced cache, where the C
    step builds: ``matmul`` "auto" or "native") stores every block matrix and the head in that format
    (``stored_as``; Q8_0 and Q4_0 as GGUF's blocks of 32 weights, one float16 scale each) and computes
    ``minigpt.quantize.round_weights(model, weights)``: activations, cache and logits stay float32, biases,
    norms and the position table too. The lookup reads a float32 copy of the rounded token table
    (``round_matrix``: one row per token, so its size costs memory, not time). Every step runs in C, the
    prompt's too (``prefill``).

    ``activations="q8_0"`` (``minigpt.quantize.ACTIVATIONS``; with weights "q8_0" or "q4_0" only) is
    llama.cpp's arithmetic: each matrix of a C step rounds its input rows to Q8_0 blocks first (bit for bit
    as ``minigpt.quantize.quantize_q8_0``) and sums each block's integer products (AVX2's vpmaddubsw or
    VNNI's vpdpbusd), times the two scales: fewer instructions per weight than widening each to float32.
    The model computed is then ``round_weights(model, weights, activations="q8_0")``. The default,
    ``"float32"``, keeps the inputs as they are (exact: the rounded weights' model within float32 rounding).

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
        activations: str = "float32",
    ) -> None:
        c = model.config
        max_len = c.block_size if max_len is None else max_len
        for name, value, high in (("max_batch_size", max_batch_size, None), ("max_len", max_len, c.block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high and value > high):
                allowed = f"an integer in [1, {high}] (the model's context)" if high else "an integer >= 1"
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
        check_dtype(dtype, none_ok=True)
        check_bool("static", static, none_ok=True)
        check_activations(activations, weights)
        # the cache and a full batch's prompt pass, refused at once rather than after copying the weights
        check_memory_fits(model, max_batch_size, max_len, f"max_batch_size={max_batch_size} rows",
                          lower="max_batch_size or max_len", prompt_rows=max_batch_size, prompt_len=max_len,
                          dtype=dtype)
        wte = model.transformer.wte.weight.detach()
        self.config, self.device = c, wte.device
        self.dtype = wte.dtype if dtype is None else dtype
        self.max_batch_size, self.max_len = max_batch_size, max_len
        self.n_head, self.head_size = c.n_head, c.n_embd // c.n_head
        self.static = compile if static is None else static
        self.weights, self.int8_kernel, self.activations = weights, None, activations
        # every option against the table, before the first copy below (and, for int8, before timing its
        # kernels: the one chosen decides whether the C step runs them, so the table is read again after)
        options = dict(dtype=self.dtype, static=self.static, weights=weights)
        self.matmul = choose_matmul(matmul, self.device, compile, **options)
        if weights == "int8":
            self.int8_kernel = choose_int8_kernel(int8_kernel, model.transformer.h[0].mlp.c_fc.weight.detach())
            self.matmul = choose_matmul(matmul, self.device, compile, **options, int8_kernel=self.int8_kernel)
        self.tuned: dict[int, dict] = {}  # matmul "tuned": batch size -> {(in, out): the kernel timed fastest}
        self._linears: dict[int, Callable] = {}  # matmul "tuned": batch size -> its matmul (linear_for)
        layout = in_out_layout if self.matmul == "blas-in-out" else (lambda w: w)
        if weights == "int8":
            def matrix(m):
                return (Int8Linear(m.weight.detach(), m.bias, self.int8_kernel),)
        elif weights in C_ONLY:
            def matrix(m):
                return stored_as(m.weight, weights), _copy(m.bias, self.dtype)
        else:
            def matrix(m):
                return layout(_copy(m.weight, self.dtype)), _copy(m.bias, self.dtype)
        # the tied matrix, copied once: the embedding lookup and the output head read the same storage
        # (int8: the head reads its own int8 copy, the lookup the float32 table; C_ONLY: the head reads the
        # table in the format, the lookup a float32 copy of the values it stands for)
        if weights in C_ONLY:
            self.wte, self.head = round_matrix(wte, weights).contiguous(), (stored_as(wte, weights),)
        else:
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
        self.native_step = self._native_step() if self.matmul == "native" else None
        self._step = self._compiled_step() if compile else self._static_step

    def _native_step(self) -> NativeStep:
        """The C decode step (``minigpt.fast.native``) over this decoder's own weights and cache; prefill stays here."""
        # per layer its tensors by name, as minigpt.fast.layout.LAYER names them (the block's fields, then the cache)
        layers = [{**{name: _for_c(name, part) for name, part in vars(b).items()}, "cache": [cache]}
                  for b, cache in zip(self.blocks, self.cache)]
        head = _for_c("head", (*self.head, None))[:3]  # the head's matrix, and for int8 its scales and rows' sums
        qmax = 127 if isinstance(self.head[0], Int8Linear) and self.head[0].reduce_range else 255  # as fbgemm
        format = {"float": "f32"}.get(self.weights, self.weights)  # minigpt.fast.layout.FORMATS' name
        return NativeStep(layers, self.wte, self.wpe, self.ln_f, *head, self.n_head, self.max_batch_size,
                          self.max_len, qmax, format=format, activations=self.activations)

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
        linear = self.linear_for(B)  # this call's matmul: fixed per batch size, never rebound on the decoder
        # (B·T, C): one row per token, so every matmul is a plain 2-D one (no folding of batch dims per call)
        x = (F.embedding(idx, self.wte) + F.embedding(positions, self.wpe)).flatten(0, 1)
        row = x.shape[1:]  # (C,): what each layer norm normalizes over
        for cache, w in zip(self.cache, self.blocks):
            x = x + self._attention(F.layer_norm(x, row, *w.ln_1), w, cache[:B], at, kv_len, mask, linear)
            h = F.gelu(linear(F.layer_norm(x, row, *w.ln_2), *w.c_fc), approximate="tanh")
            x = x + linear(h, *w.mlp_proj)
        x = F.layer_norm(x[T - 1 :: T], row, *self.ln_f)  # each sequence's last position only: (B, C)
        return linear(x, *self.head)  # (B, V)

    def _attention(
        self, x: torch.Tensor, w: _BlockWeights, cache: torch.Tensor, at: slice | torch.Tensor, kv_len: int,
        mask: torch.Tensor | None, linear: Callable,
    ) -> torch.Tensor:
        """Attention of the (B·T, C) rows ``x``, whose keys and values go to ``cache`` (B, max_len, 2C) ``at``."""
        (B, _, C2), nh, hs = cache.shape, self.n_head, self.head_size
        C, T = C2 // 2, x.shape[0] // B
        qkv = linear(x, *w.c_attn).view(B, T, 3 * C)  # fused QKV: one matmul, then q | k | v per token
        cache[:, at] = qkv[:, :, C:]  # keys and values in one copy, in place: the cache never grows or moves
        q = qkv[:, :, :C].view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = cache[:, :kv_len, :C].view(B, kv_len, nh, hs).transpose(1, 2)  # (B, nh, kv_len, hs)
        v = cache[:, :kv_len, C:].view(B, kv_len, nh, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        return linear(y.transpose(1, 2).reshape(B * T, C), *w.attn_proj)

    def _static_step(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache_pos: torch.Tensor, key_ok: torch.Tensor
    ) -> torch.Tensor:
        """One token per row at cache position ``cache_pos`` (a (1,) tensor): same shapes every step."""
        mask = key_ok & (self.key_pos <= cache_pos)  # (B, 1, 1, max_len): real tokens written so far
        return self._forward(tokens, positions, cache_pos, self.max_len, mask)

    # --- prefill and decode -------------------------------------------------------------------------

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Run the (B, T) prompt, fill cache positions [0, T), return the next-token logits (B, V).

        ``C_ONLY`` weights have no torch step: their prompt runs through the C step, all its positions in
        one call (``_prefill_in_c``); the others run it as one pass in torch.
        """
        if self.weights in C_ONLY:
            return self._prefill_in_c(ids, positions)
        T = ids.size(1)
        attn = causal_mask(T, 0, mask)  # the eager model's mask, pads included
        return self._forward(ids, positions, slice(0, T), T, attn)

    def _prefill_in_c(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The prompt through the C decode step in one call, all its T tokens at once (``NativeStep`` with
        (B, T) tokens): each token computed exactly as a decode step of its own would compute it (the same
        sums in the same order), every matrix read once for all of them, and no float32 copy of any matrix
        made.

        A token sees the cache positions ``key_ok`` marks, up to its own. A left-padded row's padding is no
        real token, but its own query must see something, or its softmax is over nothing (0 / 0). So token t
        sees position t whatever the mask: a pad then attends to itself, and its key and value, finite, are
        masked out (weight exactly 0) for every real token after it.
        """
        B, T = ids.shape
        seen = None
        if self.padded:
            seen = self.key_ok[:B, 0, 0].repeat_interleave(T, 0)  # (B * T, max_len): each token its row's mask
            seen[torch.arange(B * T), torch.arange(T).repeat(B)] = True  # and its own position
        return self.native_step(ids, positions, 0, seen)

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
    ) -> Generation:
        """Continue prompt ids (B, T), left-padded with ``attention_mask`` if rows differ; ``ids`` is (B, T + new).

        The result is ``generate``'s, field for field (``texts`` None, as for any id prompt): greedy tokens
        are those of ``minigpt.generate.generate(model, ids, attention_mask=..., max_new_tokens=...)``, and
        so is the layout: after a row's EOS come ``PAD_TOKEN_ID`` s, and the result ends when every row has
        ended. Sampling (``do_sample=True``) supports ``temperature``,
        ``top_k``, ``top_p`` and ``min_p``, applied by ``minigpt.logits``, and draws like the eager loop:
        without EOS, the same ``seed`` gives the same tokens in both. The other logits transforms
        (repetition penalty, n-gram bans, ...) need the readable loop.

        >>> from minigpt.model import GPT, GPTConfig
        >>> decoder = FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=2, max_len=16)
        >>> ids = torch.tensor([[50256, 15496], [6109, 3626]])
        >>> out = decoder.generate(ids, torch.tensor([[0, 1], [1, 1]]), max_new_tokens=4, do_sample=True, seed=0)
        >>> out.ids.shape, out.attention_mask[0].tolist(), len(out.new_tokens[1])
        (torch.Size([2, 6]), [0, 1, 1, 1, 1, 1], 4)
        """
        check_type("ids", ids, torch.Tensor, "a (B, T) tensor of token ids (for text, use minigpt.generate.generate)")
        ids, mask = check_id_prompt(ids, attention_mask, self.config.vocab_size)
        B, T = ids.shape
        self._check_call(B, T, max_new_tokens)
        check_bool("do_sample", do_sample)  # "no" would be truthy: it would sample when asked not to
        settings = L.LogitsSettings.with_off_values(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        ids, mask = ids.to(self.device), mask.to(self.device)
        sample = do_sample and temperature != 0
        chain = settings.chain(sample=sample)  # built once, applied at every step
        rng = make_generator(seed, generator, self.device)
        eos = torch.tensor(as_eos_ids(eos_token_id), dtype=torch.long, device=self.device)
        out = self.out[:B]
        out[:, :T] = ids
        self.key_ok[:B, 0, 0, :T] = mask.bool()
        self.padded = not bool(mask.all())  # one host sync per call, not per step
        self.key_ok[:B, 0, 0, T:] = True  # every new token is real
        positions = position_ids_from_mask(mask)  # real tokens only, as in generate.py: a padded row starts at 0
        logits = self.prefill(ids, mask, positions)
        positions = positions[:, -1:] + 1  # (B, 1): the next token's position in each row
        done = torch.zeros(B, dtype=torch.bool, device=self.device)  # rows that emitted EOS
        last = torch.full((B,), max_new_tokens - 1, device=self.device)  # the step each row ended at
        for step in range(max_new_tokens):
            if step > 0:
                logits = self.decode_one_token(out[:, T + step - 1 : T + step], positions, T + step - 1)
                positions += 1
            tokens = self._pick(logits, out[:, : T + step], step, chain, sample, rng)
            if len(eos):
                tokens = tokens.masked_fill(done, PAD_TOKEN_ID)  # a finished row only pads
                ended = ~done & torch.isin(tokens, eos)
                last = last.masked_fill(ended, step)
                done |= ended
            out[:, T + step] = tokens  # on the device: no .item(), no host sync
            if len(eos) and (step + 1) % EOS_CHECK_EVERY == 0 and done.all():
                break
        n = int(last.max()) + 1 if len(eos) else max_new_tokens  # the one host sync, after the loop
        ids = out[:, : T + n].clone()  # a copy: the next call reuses the buffer
        lengths = last + 1  # (B,) new tokens of each row, its EOS included
        new_mask = (torch.arange(n, device=self.device) < lengths.unsqueeze(1)).long()  # (B, n)
        new_tokens = [row[:k] for row, k in zip(ids[:, T:].tolist(), lengths.tolist())]
        stopped_by = ["eos" if ended else None for ended in done.tolist()]
        return Generation(ids, torch.cat([mask, new_mask], 1), new_tokens, None, stopped_by)

    def linear_for(self, batch_size: int) -> Callable:
        """The matmul of a call with ``batch_size`` rows: ``linear(x, *matrix)`` for each of its matrices.

        A matrix is one of the decoder's (weight, bias) tuples, or with int8 weights an (Int8Linear,) one.
        Every ``matmul`` but ``"tuned"`` runs one kernel whatever the batch size (``"native"``: the prompt's
        pass runs ``F.linear``, or ``Int8Linear``; the decode steps run in C); ``"tuned"`` times the
        candidates at each batch size's first call (``_tune``) and keeps what it chose.

        >>> from minigpt.model import GPT, GPTConfig
        >>> FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=1, matmul="blas").linear_for(1) is F.linear
        True
        """
        if self.weights == "int8":
            return _int8_linear
        if self.matmul == "tuned":
            if batch_size not in self._linears:
                self._linears[batch_size] = self._tune(batch_size)
            return self._linears[batch_size]
        return kernels.onednn_linear if self.matmul == "onednn" else F.linear

    def linear(self, x: torch.Tensor, *matrix: torch.Tensor | Int8Linear | None) -> torch.Tensor:
        """``x`` (B, in) times one of the decoder's matrices, by the kernel a decode step of B rows runs.

        >>> from minigpt.model import GPT, GPTConfig
        >>> decoder = FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=1, matmul="blas")
        >>> decoder.linear(torch.randn(1, 64), *decoder.head).shape
        torch.Size([1, 50257])
        """
        return self.linear_for(x.shape[0])(x, *matrix)

    def _tune(self, batch_size: int) -> Callable:
        """The matmul for calls of ``batch_size`` rows: per matrix shape, the kernel that is fastest here.

        Timed once per batch size (``minigpt.fast.kernels.time_kernels``), for each shape (QKV, attention
        output, MLP up, MLP down, the head) and each of ``kernels.candidates()``. ``self.tuned[batch_size]``
        records the choice, (in, out) → kernel name. The first batch size timed also fixes each shape's
        layout: where "blas-in-out" wins, the matrices of that shape are stored (in, out) from then on and
        later batch sizes keep that kernel; elsewhere they choose between "onednn" and "blas". While the
        first timing runs, an (in, out) copy of every matrix is alive beside the decoder's own (for GPT-2
        124M in fp32, about 500 MB more).

        Why three: at batch 1 a matmul streams each matrix's rows, and how fast depends on the row length,
        the storage order, the kernel and the CPU; no rule fits every CPU, so each one is timed.
        """
        candidates = kernels.candidates()
        first = not self.tuned
        slots = self._matrix_slots()
        names = {shape: [*candidates] if first else [IN_OUT] if self.tuned_layout(shape) == "in-out"
                 else [n for n in candidates if n != IN_OUT] for shape in slots}
        matrices = {(shape, n): self._matrices_for(n, slots[shape]) for shape in slots for n in names[shape]}
        x = {shape: torch.randn(batch_size, shape[0], dtype=self.dtype, device=self.device) for shape in slots}
        seconds = kernels.time_kernels(candidates, names, matrices, x)
        choice = {shape: min(names[shape], key=lambda n, s=shape: seconds[s, n]) for shape in slots}
        if first:
            for shape, name in choice.items():
                if name == IN_OUT:
                    self._store(slots[shape], matrices[shape, name])
        self.tuned[batch_size] = choice
        chosen = {shape: candidates[name] for shape, name in choice.items()}
        return lambda x, w, b=None: chosen[w.shape[1], w.shape[0]](x, w, b)

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
        logits: torch.Tensor, ids: torch.Tensor, step: int, chain: L.Chain, sample: bool,
        rng: torch.Generator | None,
    ) -> torch.Tensor:
        """One token per row, chosen on the device: argmax, or a draw as the readable loop draws."""
        scores = chain(logits.float(), ids, new_tokens=step)  # fp32, as the eager loop
        if not sample:
            return scores.argmax(dim=-1)
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=rng).squeeze(1)

