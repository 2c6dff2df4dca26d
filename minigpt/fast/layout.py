"""The C decode step's interface, declared once: what each layer hands it, its arguments, its functions.

``csrc/decode_step.c`` and ``minigpt.fast.native`` must agree on three things: the order of the pointers
each layer hands the step (``LAYER``), the fields of the one struct every step receives (``STEP_ARGS``),
and the signatures of the functions the library exports (``FUNCTIONS``). They are written here only.
``native`` builds its ctypes types from them, and ``header()`` writes them as C: the build compiles that
text into the library (``#include "decode_step_layout.h"``), and the library reports back the numbers it
was compiled with (``compiled_layout``), which ``native`` compares with ``expected_layout()`` on load.

>>> PER_LAYER
21
>>> print(header().splitlines()[3])
enum { LN_1 = 0, C_ATTN = 2, ATTN_PROJ = 6, LN_2 = 10, C_FC = 12, MLP_PROJ = 16, CACHE = 20, PER_LAYER = 21 };
>>> print(header().splitlines()[4])
enum { F32 = 0, INT8 = 1, FP16 = 2, BF16 = 3, Q8_0 = 4, Q4_0 = 5 };
>>> print(header().splitlines()[5])
enum { FLOAT32_INPUTS = 0, Q8_0_INPUTS = 1 };
"""

from __future__ import annotations

import ctypes

from minigpt.quantize import ACTIVATIONS

# Per layer, in this order, the pointers the step reads (name, how many). A layer norm is its weight and
# bias; a matrix is its (out, in) weights (stored as FORMATS says), then for int8 its per-row scales and
# rows' sums of weights (else NULL, NULL), then its bias (or NULL); the cache is the layer's
# (max_batch, max_len, 2C) keys and values.
# The names are those of the decoder's block weights (``minigpt.fast.decoder``), upper-cased in C.
LAYER = (("ln_1", 2), ("c_attn", 4), ("attn_proj", 4), ("ln_2", 2), ("c_fc", 4), ("mlp_proj", 4), ("cache", 1))
MATRIX = ("weight", "scale", "row_sum", "bias")  # a matrix's four pointers, in order
PER_LAYER = sum(n for _, n in LAYER)
# how a step's matrices (every block matrix and the head) store their weights, numbered in this order (the
# StepArgs field `format`): float32; int8 with a scale per row; float16; bfloat16; GGUF's Q8_0 and Q4_0
# blocks (per 32 weights of a row, an fp16 scale then the codes). Upper-cased, they are C's names.
FORMATS = ("f32", "int8", "fp16", "bf16", "q8_0", "q4_0")
# what a Q8_0 or Q4_0 matrix's input rows are before its products (the StepArgs field `activations`, an index
# into minigpt.quantize.ACTIVATIONS): float32 as they are, or rounded to Q8_0 blocks (llama.cpp's arithmetic).
# C's names: the upper-cased name, then _INPUTS (FLOAT32_INPUTS, Q8_0_INPUTS)
INPUTS = tuple(f"{name.upper()}_INPUTS" for name in ACTIVATIONS)

# decode_step's one argument, a struct of these fields (name, C type), in this order
STEP_ARGS = (
    ("layers", "const void *const *"),  # n_layer * PER_LAYER pointers, as LAYER orders them
    ("n_layer", "int"),
    ("wte", "const float *"),  # (vocab, C) token table
    ("wpe", "const float *"),  # (block_size, C) position table
    ("ln_f_w", "const float *"),
    ("ln_f_b", "const float *"),
    ("head", "const void *"),  # (vocab, C): the token table, or its int8 copy
    ("head_scale", "const float *"),  # int8 head only, else NULL
    ("head_row_sum", "const int32_t *"),  # int8 head only, else NULL
    ("tokens", "const int64_t *"),  # (B, T)
    ("positions", "const int64_t *"),  # (B, T)
    ("key_ok", "const uint8_t *"),  # (B * T, max_len): the cache positions each token may see; NULL: all
    ("B", "int"),
    ("T", "int"),  # tokens per row: 1 in a decode step, the prompt's length in a prompt's pass
    ("C", "int"),
    ("n_head", "int"),
    ("vocab", "int"),
    ("max_len", "int"),
    ("pos", "int"),  # the cache position of each row's first token
    ("format", "int"),  # how the matrices and the head store their weights: an index into FORMATS
    ("activations", "int"),  # Q8_0 and Q4_0 matrices' inputs: an index into ACTIVATIONS (C: INPUTS)
    ("qmax", "int"),  # int8 inputs are quantized over [0, qmax]: 255, or 127 (fbgemm's reduced range)
    ("work", "float *"),  # scratch of work_floats(B * T, C, n_head, max_len, n_threads) floats
    ("logits", "float *"),  # (B, vocab) out: each row's last token's
    ("n_threads", "int"),
)

# the library's exported functions: name -> (return type, argument types)
FUNCTIONS = {
    "decode_step": ("void", ("const StepArgs *",)),
    "matvec_f32": ("void", ("const float *", "int", "int", "const float *", "float *", "int")),
    "work_floats": ("int64_t", ("int", "int", "int", "int", "int")),
    # n floats (a multiple of 32) as Q8_0 blocks, bit for bit as minigpt.quantize.quantize_q8_0: n int8 codes,
    # n / 32 float16 scales (their bits)
    "quantize_rows_q8_0": ("void", ("const float *", "int64_t", "int8_t *", "uint16_t *")),
    # y (B, rows) = x (B, cols) @ W^T for W (rows, cols) in a FORMATS format, its inputs as ACTIVATIONS says,
    # on n_threads threads: one matrix of the step, alone (arguments: W, format, activations, rows, cols, x, B,
    # y, n_threads)
    "matvec_format": ("void", ("const void *", "int", "int", "int", "int", "const float *", "int", "float *", "int")),
    "compiled_layout": ("int", ("int64_t *", "int")),
}


def ctype(c: str) -> type | None:
    """The ctypes type that passes a value of C type ``c``: every pointer as an address.

    >>> ctype("const float *"), ctype("int"), ctype("void")
    (<class 'ctypes.c_void_p'>, <class 'ctypes.c_int'>, None)
    """
    if c.endswith("*"):
        return ctypes.c_void_p
    return {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "void": None}[c]


class StepArgs(ctypes.Structure):
    """``decode_step``'s argument, field for field as ``STEP_ARGS`` declares it.

    >>> StepArgs(B=2).B, len(StepArgs._fields_)
    (2, 25)
    """

    _fields_ = [(name, ctype(c)) for name, c in STEP_ARGS]


def offsets(layer: tuple[tuple[str, int], ...] = LAYER) -> dict[str, int]:
    """Where each of ``layer``'s entries starts among a layer's pointers.

    >>> offsets()["c_fc"]
    12
    """
    starts, at = {}, 0
    for name, n in layer:
        starts[name], at = at, at + n
    return starts


def header(layer: tuple[tuple[str, int], ...] = LAYER, step_args: tuple[tuple[str, str], ...] = STEP_ARGS) -> str:
    """The C text of the declarations above, which the build compiles into the library.

    ``LAYOUT_NUMBERS`` lists what ``compiled_layout`` reports, in ``expected_layout()``'s order, as the
    compiler computes them; the prototypes make it check each exported function's definition against
    ``FUNCTIONS``.

    >>> "typedef struct {" in header() and "void decode_step(const StepArgs *);" in header()
    True
    """
    enum = ", ".join([*(f"{name.upper()} = {at}" for name, at in offsets(layer).items()),
                      f"PER_LAYER = {sum(n for _, n in layer)}"])
    fields = "\n".join(f"    {c}{'' if c.endswith('*') else ' '}{name};" for name, c in step_args)
    field_numbers = [(f"offsetof(StepArgs, {name})", f"sizeof(((StepArgs *)0)->{name})") for name, _ in step_args]
    formats = ", ".join(f"{name.upper()} = {i}" for i, name in enumerate(FORMATS))
    inputs = ", ".join(f"{name} = {i}" for i, name in enumerate(INPUTS))
    numbers = ["PER_LAYER", *(name.upper() for name, _ in layer), *(name.upper() for name in FORMATS), *INPUTS,
               "sizeof(StepArgs)", *sum(field_numbers, ())]
    prototypes = "\n".join(f"{ret} {name}({', '.join(args)});" for name, (ret, args) in FUNCTIONS.items())
    return (f"/* generated by minigpt/fast/layout.py: edit it there */\n#include <stddef.h>\n#include <stdint.h>\n"
            f"enum {{ {enum} }};\nenum {{ {formats} }};\nenum {{ {inputs} }};\n"
            f"typedef struct {{\n{fields}\n}} StepArgs;\n"
            f"#define LAYOUT_COUNT {len(numbers)}\n#define LAYOUT_NUMBERS {', '.join(numbers)}\n{prototypes}\n")


def expected_layout() -> dict[str, int]:
    """What a library built from ``header()`` must report, by name: PER_LAYER, where each of a layer's
    entries starts, each weight format's number, each activations' number, the struct's size, and each
    field's offset and size.

    >>> list(expected_layout().items())[:3]
    [('PER_LAYER', 21), ('ln_1 start', 0), ('c_attn start', 2)]
    """
    fields = {}
    for name, _ in STEP_ARGS:
        field = getattr(StepArgs, name)
        fields[f"StepArgs.{name} offset"], fields[f"StepArgs.{name} size"] = field.offset, field.size
    return {"PER_LAYER": PER_LAYER, **{f"{name} start": at for name, at in offsets().items()},
            **{f"format {name}": i for i, name in enumerate(FORMATS)},
            **{f"activations {name}": i for i, name in enumerate(ACTIVATIONS)},
            "sizeof(StepArgs)": ctypes.sizeof(StepArgs),
            **fields}
