"""int8 weights: a quarter of the bytes per decoded token, so up to four times the tokens/s of fp32.

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
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from minigpt.checks import check_choice
from minigpt.metrics import interleaved_times

INT8_KERNELS = ("auto", "dynamic", "weight-only")


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
