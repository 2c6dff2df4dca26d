"""Which of ``FastDecoder``'s options go together: one table, one function that reads it, one error.

Each way of computing a decode step (``TABLE``'s rows) runs on some devices, in some dtypes, compiled or
not, over the static cache or not, with float or int8 weights, and only where this machine has what it
needs (a C compiler, oneDNN's kernel for the dtype). ``choose_matmul`` checks a request against the
table and resolves ``"auto"`` to the first row of ``AUTO`` that admits it; a refusal is an
``UnsupportedOptions`` (a ``ValueError``) that names the option and why.

>>> choose_matmul("auto", torch.device("cuda"))
'blas'
>>> choose_matmul("onednn", torch.device("cuda"))
Traceback (most recent call last):
    ...
minigpt.fast.options.UnsupportedOptions: matmul must be 'auto' or 'blas' on cuda, got 'onednn'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from minigpt.checks import check_choice
from minigpt.fast import kernels, native
from minigpt.quantize import ACTIVATIONS, BLOCK_FORMATS

MATMULS = ("auto", "native", "tuned", "onednn", "blas-in-out", "blas")  # what a caller may ask for
# float: the decoder's dtype; int8: Int8Linear matrices, float32 activations; the rest (C_ONLY): float16,
# bfloat16 and GGUF's Q8_0 and Q4_0 blocks, float32 activations, multiplied by the C decode step only
WEIGHTS = ("float", "int8", "fp16", "bf16", "q8_0", "q4_0")
C_ONLY = WEIGHTS[2:]  # weights that have no torch step: every step (the prompt's too) runs in C
# the weights whose matrices may round their inputs to Q8_0 (activations="q8_0", llama.cpp's arithmetic): GGUF's
# blocks, whose integer codes then meet integer codes; every other format multiplies float32 inputs
ACTIVATIONS_FOR = {"float32": WEIGHTS, "q8_0": BLOCK_FORMATS}
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)  # BLAS runs all; oneDNN: onednn_supports
INT8_KERNELS = ("dynamic", "weight-only")  # minigpt.quantize's kernels, once "auto" is resolved


class UnsupportedOptions(ValueError):
    """``FastDecoder`` options that cannot run together, or cannot run here; the message says which and why."""


def _nothing(dtype: torch.dtype) -> None:
    return None


class Rules(NamedTuple):
    """What one way of computing a step runs with; each ``why_not_*`` says why it refuses ("" where it does not)."""

    devices: tuple[str, ...] | None  # device types it runs on; None: every one
    dtypes: tuple[torch.dtype, ...]  # what it computes in
    weights: tuple[str, ...]  # which WEIGHTS it multiplies
    why_not_dtype: str = ""  # why it refuses a dtype outside ``dtypes``
    why_not_compiled: str = ""  # why it cannot run under torch.compile
    why_not_static: str = ""  # why it cannot read the static cache (every max_len position, masked)
    int8_kernels: tuple[str, ...] = INT8_KERNELS  # with int8 weights, the int8 kernels it computes as
    lacks: Callable[[torch.dtype], str | None] = _nothing  # what this machine lacks to run it in a dtype


EAGER_C = "the C decode step is eager and reads the sliced cache (compile=False, static=False)"

# matmul -> its rules. "int8" is not asked for by name: int8 weights with matmul="auto" resolve to it
# (or to "native", the C step quantizing as fbgemm's "dynamic" kernel does). The C_ONLY weights run on
# "native" alone.
TABLE: dict[str, Rules] = {
    "native": Rules(("cpu",), (torch.float32,), ("float", "int8", *C_ONLY), "the C decode step computes in float32",
                    EAGER_C, EAGER_C, ("dynamic",), lambda dtype: native.unavailable_reason()),
    "tuned": Rules(("cpu",), DTYPES, ("float",), why_not_compiled="it times eager kernels",
                   lacks=lambda dtype: kernels.onednn_lacks(dtype)),
    "onednn": Rules(("cpu",), DTYPES, ("float",), why_not_compiled="torch.compile lowers matmuls itself",
                    lacks=lambda dtype: kernels.onednn_lacks(dtype)),
    "int8": Rules(("cpu",), (torch.float32,), ("int8",), "int8 weights compute in float32",
                  "torch.compile has no int8 kernels here"),
    "blas-in-out": Rules(("cpu",), DTYPES, ("float",)),
    "blas": Rules(None, DTYPES, ("float",)),
}
# what "auto" tries, in order, for each kind of weights: the first the table admits wins
AUTO = {"float": ("native", "tuned", "blas-in-out", "blas"), "int8": ("native", "int8"),
        **{weights: ("native",) for weights in C_ONLY}}


def refusal(
    matmul: str, device: torch.device, dtype: torch.dtype, compile: bool, static: bool, weights: str,
    int8_kernel: str | None = None,
) -> tuple[str, str] | None:
    """Why ``TABLE[matmul]`` refuses these options, as (what, why), or None where it runs them here.

    ``what`` is the option it refuses ("device", "dtype", "compile", "static", "weights") or "here" (this
    machine lacks something). An int8 kernel of None (not chosen yet) is not held against it.

    >>> refusal("onednn", torch.device("cpu"), torch.float32, True, True, "float")
    ('compile', 'torch.compile lowers matmuls itself')
    """
    rules = TABLE[matmul]
    if rules.devices is not None and device.type not in rules.devices:
        return "device", device.type
    if weights not in rules.weights or (weights == "int8" and int8_kernel not in (None, *rules.int8_kernels)):
        return "weights", weights
    if dtype not in rules.dtypes:
        return "dtype", f"{rules.why_not_dtype}, got dtype={dtype}"
    if compile and rules.why_not_compiled:
        return "compile", rules.why_not_compiled
    if static and rules.why_not_static:
        return "static", rules.why_not_static
    lacks = rules.lacks(dtype)
    return ("here", lacks) if lacks else None


def _error(asked: str, matmul: str, device: torch.device, what: str, why: str,
           weights: str = "float") -> UnsupportedOptions:
    """The refusal of ``TABLE[matmul]`` (reached by asking for ``asked``) as the error a caller sees."""
    if asked == "auto":  # int8 or C_ONLY weights: the last row they may run on refused
        if what == "device":
            return UnsupportedOptions(f"weights={weights!r}: {weights} weights run on CPU only, got device {why!r}")
        if what == "compile":
            return UnsupportedOptions(f"weights={weights!r}: {weights} weights cannot be compiled ({why})")
        if what == "static":
            return UnsupportedOptions(f"weights={weights!r}: {weights} weights need the sliced cache ({why})")
        if what == "here" and weights in C_ONLY:
            return UnsupportedOptions(f"weights={weights!r}: {weights} weights need the C decode step (they have "
                                      f"no torch step), which cannot run here: {why}")
        return UnsupportedOptions(f"weights={weights!r}: {why}")
    if what == "device":
        runs = [repr(m) for m in MATMULS if m == "auto" or TABLE[m].devices is None or why in TABLE[m].devices]
        return UnsupportedOptions(f"matmul must be {' or '.join(runs)} on {why}, got {matmul!r}")
    if what == "compile":
        compiles = [repr(m) for m in MATMULS[1:] if not TABLE[m].why_not_compiled]
        return UnsupportedOptions(f"matmul={matmul!r} cannot be compiled ({why}); use 'auto', "
                                  f"{', '.join(compiles[:-1])} or {compiles[-1]}")
    if what == "weights" and why in C_ONLY:
        return UnsupportedOptions(f"weights={why!r}: {why} weights are multiplied by the C decode step only "
                                  f"(matmul='auto' or 'native'), got matmul={matmul!r}")
    if what == "weights":
        return UnsupportedOptions(f"weights={why!r}: int8 weights bring their own kernel (int8_kernel=), "
                                  f"got matmul={matmul!r}")
    return UnsupportedOptions(f"matmul={matmul!r} cannot run here: {why}; use matmul='auto' or 'blas-in-out'")


def check_activations(activations: object, weights: str) -> None:
    """Raise unless ``activations`` (``minigpt.quantize.ACTIVATIONS``) goes with ``weights`` (``ACTIVATIONS_FOR``).

    >>> check_activations("q8_0", "fp16")
    Traceback (most recent call last):
        ...
    ValueError: activations='q8_0' needs weights 'q8_0' or 'q4_0' (GGUF's blocks, as llama.cpp), got weights='fp16'
    """
    check_choice("weights", weights, WEIGHTS)
    check_choice("activations", activations, ACTIVATIONS)
    if weights not in ACTIVATIONS_FOR[activations]:
        allowed = " or ".join(map(repr, ACTIVATIONS_FOR[activations]))
        raise ValueError(f"activations={activations!r} needs weights {allowed} (GGUF's blocks, as llama.cpp), "
                         f"got weights={weights!r}")


def check_dtype(dtype: object, *, none_ok: bool = False) -> None:
    """Raise unless ``dtype`` is one of ``DTYPES`` (or None, with ``none_ok``): a string is not a dtype.

    >>> check_dtype("bfloat16")
    Traceback (most recent call last):
        ...
    TypeError: dtype must be one of torch.float32, torch.bfloat16, torch.float16, torch.float64, got 'bfloat16'
    """
    allowed = f"one of {', '.join(map(str, DTYPES))}" + (" or None" if none_ok else "")
    if dtype is None and none_ok:
        return
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be {allowed}, got {dtype!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be {allowed}, got {dtype!r}")


def check_bool(name: str, value: object, *, none_ok: bool = False) -> None:
    """Raise unless ``value`` is True or False (or None, with ``none_ok``): 1, "no" and tensors are not.

    >>> check_bool("static", None, none_ok=True)
    """
    if not (isinstance(value, bool) or (none_ok and value is None)):
        raise TypeError(f"{name} must be True or False{' or None' if none_ok else ''}, got {value!r}")


def choose_matmul(
    matmul: str, device: torch.device, compile: bool = False, *, dtype: torch.dtype = torch.float32,
    static: bool = False, weights: str = "float", int8_kernel: str | None = None,
) -> str:
    """Check the options against ``TABLE``; resolve ``"auto"`` to the first of ``AUTO[weights]`` it admits.

    On CPU, float ``"auto"`` is ``"native"`` (every decode step in C) where the C step builds and the
    decoder is float32, eager and sliced; else ``"tuned"`` where oneDNN has an inner product for
    ``dtype`` on this CPU (``kernels.onednn_supports``) and nothing is compiled: the decoder then times
    oneDNN, BLAS and BLAS over the (in, out) layout on its own weights and keeps the fastest; else BLAS
    over the (in, out) layout (under ``compile``, whose CPU backend brings its own matmuls, too). On GPUs
    it is ``"blas"``: cuBLAS reads either layout at full speed. int8 weights take ``"auto"`` only, and
    resolve to ``"native"`` where the C step runs their (``"dynamic"``) ``int8_kernel``, else ``"int8"``.
    fp16, bf16, q8_0 and q4_0 weights (``C_ONLY``) take ``"auto"`` or ``"native"``, and run only there:
    on CPU, in float32, eager, over the sliced cache, where the C step builds.
    A matmul asked for by name that cannot run is an ``UnsupportedOptions`` that names what is missing,
    here rather than as a oneDNN or compiler error at the first step.

    >>> choose_matmul("auto", torch.device("cpu"), dtype=torch.float64)  # oneDNN has no fp64 kernel
    'blas-in-out'
    >>> choose_matmul("auto", torch.device("cpu"), weights="int8", int8_kernel="weight-only")
    'int8'
    >>> choose_matmul("auto", torch.device("cuda"), weights="q4_0")
    Traceback (most recent call last):
        ...
    minigpt.fast.options.UnsupportedOptions: weights='q4_0': q4_0 weights run on CPU only, got device 'cuda'
    """
    check_choice("matmul", matmul, MATMULS)
    check_choice("weights", weights, WEIGHTS)
    check_bool("compile", compile)
    check_bool("static", static)
    check_dtype(dtype)
    if (weights == "int8" and matmul != "auto") or (weights in C_ONLY and matmul not in ("auto", "native")):
        raise _error(matmul, matmul, device, "weights", weights)
    options = (device, dtype, compile, static, weights, int8_kernel)
    if matmul != "auto":
        problem = refusal(matmul, *options)
        if problem:
            raise _error(matmul, matmul, device, *problem)
        return matmul
    tried = AUTO[weights]
    for name in tried:
        if not refusal(name, *options):
            return name
    raise _error("auto", tried[-1], device, *refusal(tried[-1], *options), weights=weights)
