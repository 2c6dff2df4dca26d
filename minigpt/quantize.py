"""Weights in fewer bytes (int8 per row; GGUF's 8- and 4-bit blocks): fewer bytes per token, more tokens/s.

A batch-1 decode step reads every weight once and does two floating-point operations per weight read
(chapter 12): its speed is the memory's, not the arithmetic's. Storing each weight in one byte instead of
four moves that bound. The scheme is the simplest that keeps the loss: **absmax per output channel**.
Each row of an (out, in) matrix gets its own scale, max |w| / 127, so a row of small weights is not
crushed by another row's large ones; the weights become integers in [-127, 127]::

    scale[o] = max_i |W[o, i]| / 127
    Q[o, i]  = round(W[o, i] / scale[o])        # int8
    W ≈ Q * scale[:, None]                      # at most scale / 2 off, per weight

A matmul then never needs W back: ``x @ W.T = (x @ Q.T) * scale``, the scale applied once per output.

Which kernel computes ``x @ Q.T`` fast depends on the CPU, and ``INT8_KERNELS`` names the two this module
knows (``choose_int8_kernel`` picks by asking the CPU):

- ``"weight-only"``: ``torch.ops.aten._weight_int8pack_mm``: the activations stay float, each weight is
  widened to float as it is read. Nothing is lost beyond the weights' rounding. Widening costs
  instructions per weight, so where torch's CPU kernel for it is slow, int8 can be *slower* than fp32
  (docs/performance.md logs where it was), and on many rows at a time slower still.
- ``"dynamic"``: fbgemm's dynamically quantized linear (what ``torch.ao.quantization.quantize_dynamic``
  uses): each activation row is quantized to 8 bits on the fly (one scale per row) and the product runs
  in integers, with AVX2 or AVX-512 VNNI. It also rounds the activations, so it costs a little more loss.

>>> w = torch.tensor([[0.5, -1.0, 0.25], [0.1, 0.3, -0.2]])
>>> q, scale = quantize_per_channel(w)
>>> q
tensor([[  64, -127,   32],
        [  42,  127,  -85]], dtype=torch.int8)
>>> (dequantize(q, scale) - w).abs().max() <= scale.max() / 2
tensor(True)

**GGUF's block formats** (llama.cpp's Q8_0 and Q4_0) scale *blocks of 32 weights* along a row instead of
whole rows: one outlier then spoils 31 neighbours, not a whole row. Each block stores one float16 scale
``d`` and 32 integers, bit-for-bit as the ``gguf`` package's reference quantizers (``gguf.quants``) do::

    Q8_0: d = max|x| / 127             q = round-half-away-from-zero(x * (1/d))   in [-127, 127]
          x ≈ q * d                    34 bytes per 32 weights (8.5 bits each)
    Q4_0: m = the x of largest |x|     d = m / -8       q = trunc(x * (1/d) + 8.5) clipped to [0, 15]
          x ≈ (q - 8) * d              18 bytes per 32 weights (4.5 bits each): two codes per byte

Q4_0's scale is the *signed* extreme divided by -8, so that extreme lands exactly on code 0 (-8 * d = m):
the range [-8, 7] is used lopsidedly, in the extreme's favour (a value as large on the other side clips to
+7, one step short). The integers are computed with ``d`` in float32;
the stored scale is ``d`` rounded to float16. ``round_weights`` applies a format to a whole model (the
reference every faster path is checked against), and ``gguf_blocks`` gives the bytes a GGUF file holds.

>>> scale, q = quantize_q4_0(torch.linspace(-1, 0.5, 32)[None])
>>> q[0, :4].tolist(), scale.tolist(), dequantize_q4_0(scale, q)[0, :2].tolist()
([0, 0, 1, 1], [[0.125]], [-1.0, -1.0])
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from minigpt.checks import check_choice
from minigpt.metrics import interleaved_times
from minigpt.model import GPT

INT8_KERNELS = ("auto", "dynamic", "weight-only")
BLOCK_SIZE = 32  # weights per block in GGUF's Q8_0 and Q4_0, each block with one float16 scale
BLOCK_FORMATS = ("q8_0", "q4_0")
WEIGHT_FORMATS = ("fp16", "bf16", *BLOCK_FORMATS)  # what round_weights rounds through
# bytes read per weight (the roofline's bound); a block's float16 scale is shared by its 32 weights
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "q8_0": 34 / 32, "q4_0": 18 / 32}
# the matrices a format rounds, inside each block; with the token table (tied to the head) they are the bytes
ROUNDED_MATRICES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# what the inputs of a block-format model's matrices are rounded to before each matmul: nothing (float32,
# the exact default), or Q8_0 blocks, as llama.cpp does, so that each block's dot product is an integer sum
ACTIVATIONS = ("float32", "q8_0")


def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An (out, in) float matrix as int8 ``q`` (out, in) and a float32 ``scale`` (out,): ``w ≈ q * scale[:, None]``.

    Absmax per output channel: each row is divided by its largest |weight| / 127 and rounded, so every row
    uses the whole range [-127, 127] (-128 is left out, keeping the range symmetric). A row of zeros gets
    scale 1 (any scale would do: its integers are all 0).

    >>> q, scale = quantize_per_channel(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]))
    >>> q.tolist(), scale.tolist()
    ([[64, -127, 32], [0, 0, 0]], [0.015748031437397003, 1.0])
    """
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or not w.is_floating_point():
        shown = f"a {w.ndim}-D {w.dtype} tensor" if isinstance(w, torch.Tensor) else repr(type(w).__name__)
        raise ValueError(f"w must be a 2-D floating-point (out, in) tensor, got {shown}")
    w = w.detach().float()
    absmax = w.abs().amax(dim=1)  # (out,)
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # clamp: rounding never exceeds, but be exact
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 matrix the int8 ``q`` (out, in) and its per-row ``scale`` (out,) stand for.

    >>> dequantize(torch.tensor([[64, -127]], dtype=torch.int8), torch.tensor([0.5]))
    tensor([[ 32.0000, -63.5000]])
    """
    return q.float() * scale[:, None]


def has_vnni() -> bool:
    """Does this CPU add 8-bit products into 32 bits in one instruction (AVX-512 VNNI), as torch sees it?

    Asked of the CPU (``torch.cpu._is_vnni_supported``) and of the instructions torch uses on it
    (``torch.backends.cpu.get_cpu_capability``): with ``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 CPU,
    this answers as an AVX2 CPU would (no), so the int8 kernels behave as they would there.

    >>> has_vnni() in (True, False)
    True
    """
    return torch.backends.cpu.get_cpu_capability() == "AVX512" and torch.cpu._is_vnni_supported()


def int8_kernels_here() -> tuple[str, ...]:
    """The int8 kernels this CPU and torch build can run, asked rather than assumed.

    ``"dynamic"`` needs fbgemm, torch's x86 int8 library, which needs AVX2 (torch lists it among
    ``torch.backends.quantized.supported_engines`` only where it runs). ``"weight-only"`` runs on any CPU.

    >>> "weight-only" in int8_kernels_here()
    True
    """
    dynamic = "fbgemm" in torch.backends.quantized.supported_engines and torch.cpu._is_avx2_supported()
    return ("dynamic", "weight-only") if dynamic else ("weight-only",)


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights, absmax per output channel (``quantize_per_channel``): y = x Wᵀ + b.

    ``kernel`` is ``"dynamic"`` or ``"weight-only"`` (see the module docstring; ``choose_int8_kernel``
    picks one). The bias stays float32, as do the input and the output.

    >>> layer = Int8Linear(torch.eye(3), torch.zeros(3), kernel="weight-only")
    >>> layer(torch.tensor([[1.0, 2.0, 3.0]]))
    tensor([[1., 2., 3.]])
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kernel: str) -> None:
        super().__init__()
        check_choice("kernel", kernel, INT8_KERNELS[1:])
        self.kernel, self.out_features, self.in_features = kernel, *weight.shape
        q, scale = quantize_per_channel(weight)
        self.register_buffer("q", q)  # (out, in) int8
        self.register_buffer("scale", scale)  # (out,) float32
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        # "dynamic": AVX2's int8 multiply-add (vpmaddubsw) saturates at 16 bits with 8-bit activations, so
        # fbgemm is told to use 7 (reduce_range); VNNI (vpdpbusd) adds into 32 bits and takes the full 8.
        # The CPU is asked.
        self.reduce_range = kernel == "dynamic" and not has_vnni()
        if kernel == "dynamic":
            # fbgemm takes its weights as a torch "quantized tensor", a format torch has deprecated (it still
            # runs fbgemm's kernels, which nothing else in torch reaches); the warning says so at every call
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
                packed = torch._make_per_channel_quantized_tensor(
                    q, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0)
            self._packed = torch.ops.quantized.linear_prepack(packed, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (N, in): both kernels take a matrix
        if self.kernel == "dynamic":
            y = torch.ops.quantized.linear_dynamic(rows, self._packed, self.reduce_range)
        else:
            y = torch.ops.aten._weight_int8pack_mm(rows, self.q, self.scale)
            y = y if self.bias is None else y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


def choose_int8_kernel(kernel: str, weight: torch.Tensor, repeats: int = 20) -> str:
    """Resolve ``"auto"`` to the faster int8 kernel on this CPU, timed on ``weight`` at batch 1; check the others.

    Only kernels this CPU runs (``int8_kernels_here``) are candidates. Which is faster depends on the
    CPU's int8 instructions and torch's kernels for them (docs/performance.md has readings): weight-only
    would win where torch has a fast kernel for it and fbgemm does not run (ARM). The timing decides, so
    nothing is assumed: ``repeats`` calls of each at batch 1, taking turns
    (``minigpt.metrics.interleaved_times``), so a busy spell of a shared machine slows one call of each
    kernel rather than every call of one; the fastest call of each is compared.

    >>> choose_int8_kernel("weight-only", torch.randn(8, 8))
    'weight-only'
    """
    check_choice("int8 kernel", kernel, INT8_KERNELS)
    here = int8_kernels_here()
    if kernel != "auto":
        if kernel not in here:
            raise ValueError(f"int8 kernel {kernel!r} cannot run here: it needs fbgemm (x86 with AVX2); "
                             f"this CPU runs {', '.join(here)}")
        return kernel
    if len(here) == 1:
        return here[0]
    x = torch.randn(1, weight.shape[1])
    layers = {k: Int8Linear(weight, None, k) for k in here}
    times = interleaved_times({k: lambda layer=layer: layer(x) for k, layer in layers.items()}, repeats)
    return min(times, key=lambda k: times[k].low)


def quantize_model(model: nn.Module, kernel: str = "auto") -> nn.Module:
    """A copy of ``model`` whose every ``nn.Linear`` (the tied output head included) is an ``Int8Linear``.

    The embeddings, layer norms and biases stay float32: they are a small share of the bytes, and the
    token table is looked up one row at a time (its int8 copy serves the head, the one place it is read
    whole). ``kernel="auto"`` times the kernels on the first matrix (``choose_int8_kernel``). The model
    passed in is not changed.

    >>> from minigpt.model import GPT, GPTConfig
    >>> small = quantize_model(GPT(GPTConfig.from_preset("tiny")), kernel="weight-only")
    >>> small.lm_head
    Int8Linear(in_features=64, out_features=50257, kernel=weight-only)
    """
    int8 = copy.deepcopy(model).float().eval()
    linears = [(parent, name, child) for parent in int8.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Linear)]
    if not linears:
        raise ValueError(f"model has no nn.Linear layer to quantize ({type(model).__name__})")
    kernel = choose_int8_kernel(kernel, linears[0][2].weight.detach())
    for parent, name, child in linears:
        setattr(parent, name, Int8Linear(child.weight.detach(), child.bias, kernel))
    return int8


# --- GGUF's block formats: Q8_0 and Q4_0 -------------------------------------------------------------


def quantize_q8_0(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GGUF's Q8_0 of a (rows, n) float matrix: float16 ``scale`` (rows, n // 32) and int8 ``q`` (rows, n).

    Per block of 32: d = max|x| / 127 and q = x * (1/d) rounded half away from zero, in float32 as
    ``gguf.quants`` computes it (multiplying by the reciprocal, not dividing: the last bit can differ).
    A block of zeros gets d = 0 and codes 0.

    >>> scale, q = quantize_q8_0(torch.arange(32.0)[None] - 16)
    >>> scale.tolist(), q[0, :3].tolist(), q[0, -1].item()
    ([[0.1259765625]], [-127, -119, -111], 119)
    """
    x = _blocks("w", w)  # (rows, n // 32, 32) float32
    d = x.abs().amax(dim=-1, keepdim=True) / 127  # (rows, nb, 1)
    q = _round_half_away(x * _reciprocal(d))
    return d.squeeze(-1).half(), q.to(torch.int8).flatten(1)


def dequantize_q8_0(scale: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The float32 (rows, n) matrix Q8_0's float16 ``scale`` (rows, n // 32) and int8 ``q`` (rows, n) stand for.

    >>> dequantize_q8_0(torch.tensor([[0.5]], dtype=torch.float16), torch.arange(32, dtype=torch.int8)[None])[0, :3]
    tensor([0.0000, 0.5000, 1.0000])
    """
    _check_codes(scale, q, torch.int8)
    return (q.float().unflatten(1, (-1, BLOCK_SIZE)) * scale.float()[..., None]).flatten(1)


def quantize_q4_0(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GGUF's Q4_0 of a (rows, n) float matrix: float16 ``scale`` (rows, n // 32), uint8 codes ``q`` 0..15 (rows, n).

    Per block of 32: m = the value of largest magnitude, with its sign (the first one on a tie), d = m / -8,
    q = trunc(x * (1/d) + 8.5) clipped to [0, 15], in float32 as ``gguf.quants`` computes it. The codes are
    returned one per byte; ``pack_q4_0`` puts two in a byte as GGUF stores them. A block of zeros: d = 0,
    codes 8.

    >>> scale, q = quantize_q4_0(torch.arange(32.0)[None] - 16)
    >>> scale.tolist(), q[0, :3].tolist(), q[0, -1].item()
    ([[2.0]], [0, 1, 1], 15)
    """
    x = _blocks("w", w)  # (rows, n // 32, 32) float32
    extreme = x.gather(-1, x.abs().argmax(dim=-1, keepdim=True))  # (rows, nb, 1), signed
    d = extreme / -8  # the extreme maps to code 0: (extreme / d) + 8 = 0
    # two float32 roundings (product, then sum), never fused: numpy computes them apart, and so does torch here
    q = torch.trunc(x * _reciprocal(d) + 8.5).clamp(0, 15)
    return d.squeeze(-1).half(), q.to(torch.uint8).flatten(1)


def dequantize_q4_0(scale: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The float32 (rows, n) matrix Q4_0's float16 ``scale`` (rows, n // 32) and codes ``q`` 0..15 (rows, n) stand for.

    >>> codes = torch.arange(32, dtype=torch.uint8)[None] % 16
    >>> dequantize_q4_0(torch.tensor([[0.5]], dtype=torch.float16), codes)[0, :3]
    tensor([-4.0000, -3.5000, -3.0000])
    """
    _check_codes(scale, q, torch.uint8, high=15)
    return ((q.float() - 8).unflatten(1, (-1, BLOCK_SIZE)) * scale.float()[..., None]).flatten(1)


def pack_q4_0(q: torch.Tensor) -> torch.Tensor:
    """Q4_0 codes (rows, n), uint8 0..15, two to a byte in GGUF's order: uint8 (rows, n // 2).

    Within each block of 32, byte j holds code j in its low four bits and code j + 16 in its high four
    (not neighbours: a SIMD kernel unpacks a whole block's low halves, then its high halves, with one mask
    and one shift each).

    >>> pack_q4_0(torch.arange(32, dtype=torch.uint8)[None] % 16)[0, :3].tolist()  # 0 | 0 << 4, 1 | 1 << 4 ...
    [0, 17, 34]
    """
    _check_codes(None, q, torch.uint8, high=15)
    halves = q.unflatten(1, (-1, 2, BLOCK_SIZE // 2))  # (rows, nb, 2, 16): codes 0..15 and 16..31 of each block
    return (halves[:, :, 0] | (halves[:, :, 1] << 4)).flatten(1)


def gguf_blocks(scale: torch.Tensor, q: torch.Tensor, fmt: str) -> torch.Tensor:
    """The bytes a GGUF file holds for ``quantize_q8_0``'s or ``quantize_q4_0``'s output: uint8 (rows, bytes).

    Each block is its float16 scale (2 bytes, little-endian) then its codes: 32 int8 for ``"q8_0"`` (34 bytes),
    16 packed bytes for ``"q4_0"`` (18 bytes): what ``gguf.quants.quantize`` returns.

    >>> gguf_blocks(*quantize_q8_0(torch.ones(1, 32)), "q8_0").shape
    torch.Size([1, 34])
    """
    check_choice("fmt", fmt, BLOCK_FORMATS)
    _check_codes(scale, q, torch.int8 if fmt == "q8_0" else torch.uint8, high=None if fmt == "q8_0" else 15)
    rows, blocks = scale.shape
    codes = q.view(torch.uint8) if fmt == "q8_0" else pack_q4_0(q)
    scale_bytes = scale.contiguous().view(torch.uint8).view(rows, blocks, 2)  # (rows, nb, 2)
    return torch.cat([scale_bytes, codes.view(rows, blocks, -1)], dim=-1).flatten(1)


def round_matrix(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """``w`` (rows, n) rounded through ``fmt`` (``WEIGHT_FORMATS``) and back: the float32 values it stands for.

    ``"fp16"`` and ``"bf16"`` round each weight to nearest (ties to even); the block formats quantize
    and dequantize (rows must then be a multiple of 32 long).

    >>> round_matrix(torch.tensor([[1 / 3, 1000.1]]), "bf16")
    tensor([[3.3398e-01, 1.0000e+03]])
    """
    check_choice("fmt", fmt, WEIGHT_FORMATS)
    if fmt in ("fp16", "bf16"):
        return w.detach().to(torch.float16 if fmt == "fp16" else torch.bfloat16).float()
    if fmt == "q8_0":
        return dequantize_q8_0(*quantize_q8_0(w))
    return dequantize_q4_0(*quantize_q4_0(w))


def is_rounded(name: str) -> bool:
    """Does a format round this tensor of ``model.state_dict()``? The block matrices and the token table do.

    The biases, the layer norms and the position table stay float32 in every format (a small share of
    the bytes, and llama.cpp's converter keeps them so). ``lm_head.weight`` is the token table (tied).

    >>> is_rounded("transformer.h.0.mlp.c_fc.weight"), is_rounded("transformer.h.0.mlp.c_fc.bias")
    (True, False)
    >>> is_rounded("transformer.wte.weight"), is_rounded("transformer.wpe.weight")
    (True, False)
    """
    if name in ("transformer.wte.weight", "lm_head.weight"):
        return True
    module, _, kind = name.rpartition(".")
    return kind == "weight" and module.startswith("transformer.h.") and module.split(".", 3)[-1] in ROUNDED_MATRICES


def round_weights(model: GPT, fmt: str, activations: str = "float32") -> GPT:
    """A float32 copy of ``model`` with its weights rounded through ``fmt`` (``WEIGHT_FORMATS``): what a format means.

    Every block matrix (c_attn, attn.c_proj, c_fc, mlp.c_proj weights) and the token table (still tied
    to the head) are rounded (``round_matrix``); the rest stays float32 (``is_rounded``). Every faster
    path and every exported file in that format is checked against this model. The model passed in is
    not changed.

    ``activations="q8_0"`` (``ACTIVATIONS``; block formats only) is llama.cpp's arithmetic for Q8_0 and
    Q4_0 weights: the *input* of every rounded matrix (the four of each block, and the head) is rounded
    through Q8_0 too, each position's row on its own (``round_matrix(x, "q8_0")``), before the matmul.
    Forward pre-hooks on those ``nn.Linear`` modules do it; this copy is the readable reference for
    ``FastDecoder(..., activations="q8_0")``, which sums each block's integer codes instead.

    >>> from minigpt.model import GPTConfig
    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> q4 = round_weights(model, "q4_0")
    >>> q4.lm_head.weight is q4.transformer.wte.weight
    True
    >>> torch.equal(q4.transformer.wpe.weight, model.transformer.wpe.weight)
    True
    >>> torch.equal(q4.transformer.wte.weight, model.transformer.wte.weight)
    False
    >>> a8 = round_weights(model, "q8_0", activations="q8_0")
    >>> x = torch.randn(2, 3, 64)  # (B, T, C): rounded per row of 32-number blocks, then multiplied
    >>> torch.equal(a8.lm_head(x), round_matrix(x.reshape(-1, 64), "q8_0").view(2, 3, 64) @ a8.lm_head.weight.T)
    True
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a minigpt GPT, got {type(model).__name__}")
    check_choice("fmt", fmt, WEIGHT_FORMATS)
    check_choice("activations", activations, ACTIVATIONS)
    if activations != "float32" and fmt not in BLOCK_FORMATS:
        raise ValueError(f"activations={activations!r} needs fmt {' or '.join(BLOCK_FORMATS)} (its blocks of "
                         f"{BLOCK_SIZE} are those of the weights), got fmt={fmt!r}; allowed with it: 'float32'")
    rounded = copy.deepcopy(model).float()  # deepcopy keeps the tie: lm_head.weight is still wte.weight
    with torch.no_grad():
        for name, param in rounded.named_parameters():  # each tensor once: the tied head is not listed again
            if is_rounded(name):
                param.copy_(_round_named(name, param, fmt))
    if activations == "q8_0":
        for name, module in rounded.named_modules():
            if isinstance(module, nn.Linear) and is_rounded(f"{name}.weight"):  # the head too; not the lookup
                module.register_forward_pre_hook(_q8_0_input)
    return rounded


def _q8_0_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A rounded matrix's forward pre-hook: its input (..., n) rounded through Q8_0, each row of n on its own."""
    x = args[0]
    return (round_matrix(x.reshape(-1, x.shape[-1]), "q8_0").view(x.shape).to(x.dtype), *args[1:])


def _round_named(name: str, w: torch.Tensor, fmt: str) -> torch.Tensor:
    """``round_matrix``, with a row length that is not a multiple of 32 reported under the tensor's name."""
    if fmt in BLOCK_FORMATS and w.shape[-1] % BLOCK_SIZE:
        raise ValueError(f"fmt={fmt!r} needs rows of a multiple of {BLOCK_SIZE} weights: {name} has shape "
                         f"{tuple(w.shape)} (n_embd must be a multiple of {BLOCK_SIZE})")
    return round_matrix(w, fmt)


def _blocks(name: str, w: object) -> torch.Tensor:
    """Check a (rows, n) float matrix with n % 32 == 0; return it as float32 blocks (rows, n // 32, 32)."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        shown = f"a {w.dtype} tensor" if isinstance(w, torch.Tensor) else repr(type(w).__name__)
        raise TypeError(f"{name} must be a floating-point tensor, got {shown}")
    if w.ndim != 2 or w.shape[1] % BLOCK_SIZE:
        raise ValueError(f"{name} must be a 2-D (rows, n) tensor with n a multiple of {BLOCK_SIZE}, "
                         f"got shape {tuple(w.shape)}")
    return w.detach().float().unflatten(1, (-1, BLOCK_SIZE))


def _reciprocal(d: torch.Tensor) -> torch.Tensor:
    """1/d, and 0 where d is 0 (a block of zeros: every code then comes out as zero's)."""
    return torch.where(d == 0, 0.0, 1 / d)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, halves away from zero (C's roundf), exactly as ``gguf.quants.np_roundf``.

    Not ``floor(|v| + 0.5)``: that sum rounds up in float32 for the largest float below 0.5.
    """
    a = v.abs()
    floored = a.floor()
    return v.sign() * (floored + (2 * (a - floored)).floor())


def _check_codes(scale: torch.Tensor | None, q: torch.Tensor, dtype: torch.dtype, high: int | None = None) -> None:
    """Check a block format's codes ``q`` (rows, n) and its float16 ``scale`` (rows, n // 32)."""
    if not isinstance(q, torch.Tensor) or q.dtype != dtype:
        shown = f"a {q.dtype} tensor" if isinstance(q, torch.Tensor) else repr(type(q).__name__)
        raise TypeError(f"q must be a {dtype} tensor, got {shown}")
    if q.ndim != 2 or q.shape[1] % BLOCK_SIZE:
        raise ValueError(f"q must be 2-D (rows, n) with n a multiple of {BLOCK_SIZE}, got shape {tuple(q.shape)}")
    if high is not None and q.numel() and int(q.max()) > high:
        raise ValueError(f"q must hold codes 0..{high}, got a code {int(q.max())}")
    if scale is None:
        return
    if not isinstance(scale, torch.Tensor) or scale.dtype != torch.float16:
        shown = f"a {scale.dtype} tensor" if isinstance(scale, torch.Tensor) else repr(type(scale).__name__)
        raise TypeError(f"scale must be a torch.float16 tensor, got {shown}")
    if scale.shape != (q.shape[0], q.shape[1] // BLOCK_SIZE):
        raise ValueError(f"scale must have shape (rows, n // {BLOCK_SIZE}) = {(q.shape[0], q.shape[1] // BLOCK_SIZE)} "
                         f"for q of shape {tuple(q.shape)}, got {tuple(scale.shape)}")
