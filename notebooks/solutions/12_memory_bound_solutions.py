# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 12 exercises — decoding is memory-bound (solutions)
#
# Six exercises on [chapter 12](../12_memory_bound.ipynb). To make one token, a decode step reads every
# weight of the model once and does only one multiply and one add with each; the processor could compute
# far faster than memory delivers the weights. So the bytes a step reads, divided by the memory's bandwidth,
# are a floor on the time per token. Two exercises make those bytes fewer (int8 weights with one scale per row, and
# the way back to floats), two count them (the bytes of one decode step, and the tokens/s they allow), and the
# last two make them fewer still, the way llama.cpp's files do: one block of GGUF's 4-bit format, Q4_0, and back.
#
# Each exercise asks for one function; the cell after it checks your function on hidden cases against
# minigpt's own and, when one fails, shows that input with the expected and the actual answer. In the
# [exercise notebook](../exercises/12_memory_bound_exercises.ipynb) each function is a stub for you to fill in
# (replace `raise NotImplementedError` with your code); the
# [solutions notebook](../solutions/12_memory_bound_solutions.ipynb) has them filled in.
#
# First, a prediction: write down what you expect before you run the cell that shows it. Last, an open
# question with no single right answer; the solutions notebook ends with a worked answer to it.

# %%
import torch

from minigpt.exercises.memory_bound import (
    check_bandwidth_bound,
    check_decode_step_bytes,
    check_dequantize,
    check_dequantize_q4_0_block,
    check_quantize_per_channel,
    check_quantize_q4_0_block,
)
from minigpt.model import GPTConfig

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# NBVAL_IGNORE_OUTPUT
# why: the installed version differs from machine to machine
print("torch", torch.__version__)

# %% [markdown]
# ## Before you start: predict, then run
#
# GPT-2 124M has about as many parameters as its name says, each a float32 of four bytes. The next cell asks
# `minigpt.roofline` how many bytes one decode step reads, and what that allows on a memory that delivers
# 25 GB/s (an example figure, about what one CPU reads per second; `minigpt.bench.measure_bandwidth()`
# measures yours).
#
# Before you run it, write down your answers:
#
# 1. About how many MB does one decoded token read, and so at most how many tokens per second at 25 GB/s?
# 2. Store the weights as int8, one byte each: how many tokens per second at most then?
# 3. Decode 8 sequences at once, each with 100 tokens in its KV cache: is the bound 8 times that of one
#    sequence, or less? Why?
#
# The cell prints its answers under the same numbers.

# %%
from minigpt.roofline import decode_step_bytes as library_step_bytes
from minigpt.roofline import weight_count

config = GPTConfig.from_preset("gpt2")  # GPT-2 124M: 12 layers, width 768, 50,257 tokens
bandwidth_gb_s = 25  # an example figure, not a measurement: the same numbers on every machine
print(f"GPT-2 124M: {weight_count(config) + config.block_size * config.n_embd:,} parameters")  # + position table
for question, weights in ((1, "fp32"), (2, "int8")):
    step = library_step_bytes(config, weights=weights)
    print(f"{question}. {weights}, batch 1, empty cache: {step:,} bytes = {step / 1e6:.1f} MB a step -> at most "
          f"{bandwidth_gb_s * 1e9 / step:.1f} tokens/s")
for batch_size in (1, 8):
    step = library_step_bytes(config, batch_size, context_len=100)
    print(f"3. fp32, batch {batch_size}, 100 cached positions each: {step / 1e6:.1f} MB a step -> at most "
          f"{batch_size * bandwidth_gb_s * 1e9 / step:.1f} tokens/s")

# %% [markdown]
# ## Exercise 1: int8 weights, one scale per row
#
# Fewer bytes per weight, fewer bytes per token. Write `quantize_per_channel(w)`: for an (out, in) float
# matrix, give each row o its own scale, its largest |weight| divided by 127, and store the weights as
# integers:
#
#     scale[o] = max_i |w[o, i]| / 127
#     q[o, i]  = round(w[o, i] / scale[o])     # an int8 in [-127, 127]
#
# A row of zeros gets scale 1 (its integers are 0 whatever the scale; 0 would make 0 / 0). Return
# `(q, scale)`: q of dtype `torch.int8`, shape (out, in), and scale of shape (out,).
#
# Why one scale per row and not one for the whole matrix: a row of small weights next to a row of large ones
# would otherwise round to a handful of integers near 0, and lose almost everything it held.
#
# *Hints:* `w.abs().amax(dim=1)` is each row's largest |weight|; `scale[:, None]` has shape (out, 1), so it
# divides each row by its own scale; `torch.where` picks 1 for the rows of zeros; `torch.round` rounds
# halves to the even integer, as Python's `round` does; `.to(torch.int8)` stores one byte a number.

# %% nbgrader={"grade": false, "grade_id": "quantize_per_channel", "locked": false, "schema_version": 3, "solution": true, "task": false}
def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (out, in) matrix ``w`` as int8 ``q`` and one float scale per row: ``w ≈ q * scale[:, None]``."""
    ### BEGIN SOLUTION
    absmax = w.abs().amax(dim=1)  # (out,): the largest |weight| of each row
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))  # a row of zeros: 1, never 0 / 0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in); each row by its own scale
    return q, scale
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_quantize_per_channel", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_quantize_per_channel(quantize_per_channel)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_quantize_per_channel, quantize_per_channel)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2: back to floats
#
# The matrix multiply needs numbers again. Write `dequantize(q, scale)`: the float32 matrix that the int8
# `q` (out, in) and its scales (out,) stand for, row o of q times scale[o].
#
# *Hint:* `q.float()`, then the same `scale[:, None]` as in Exercise 1.

# %% nbgrader={"grade": false, "grade_id": "dequantize", "locked": false, "schema_version": 3, "solution": true, "task": false}
def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 (out, in) matrix that int8 ``q`` and its per-row ``scale`` stand for."""
    ### BEGIN SOLUTION
    return q.float() * scale[:, None]  # (out, in) * (out, 1): row o times scale[o]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dequantize", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_dequantize(dequantize)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_dequantize, dequantize)
### END HIDDEN TESTS

# %% [markdown]
# ### What the rounding costs
#
# Rounding moves each weight to the nearest multiple of its row's scale, so no weight moves by more than
# half a scale. The next cell shows it on a row of large weights and a row of small ones, with minigpt's own
# `minigpt.quantize` (so it runs before you have finished), next to one scale for the whole matrix.

# %%
from minigpt import quantize

w = torch.tensor([[0.8, 1.2, -0.3, 0.05], [0.012, 0.03, -0.021, 0.004]])  # (2, 4): large weights, small ones
q, scale = quantize.quantize_per_channel(w)
error = (quantize.dequantize(q, scale) - w).abs().amax(dim=1)  # (2,): the largest error of each row
one_scale = w.abs().max() / 127  # what a single scale for the whole matrix would be
error_one_scale = (torch.round(w / one_scale) * one_scale - w).abs().amax(dim=1)
for row in range(2):
    largest = w[row].abs().max()
    print(f"row {row}: scale {scale[row]:.3g}, largest error {error[row]:.3g} "
          f"({error[row] / largest:.2%} of its largest weight); one scale for all: "
          f"{error_one_scale[row]:.3g} ({error_one_scale[row] / largest:.2%})")
assert (error <= scale / 2 * 1.0001).all()  # at most half a scale (1.0001: float32's own rounding)
assert error_one_scale[1] / w[1].abs().max() > 0.1  # one scale for all: the small row is off by over 10%

# %% [markdown]
# ## Exercise 3: the bytes of one decode step
#
# Write `decode_step_bytes(config, batch_size, context_len)`: the bytes one decode step reads, with the
# weights and the KV cache in float32 (4 bytes a number), as an int.
#
# - **Every weight, once**, shared by the whole batch. Each of the `n_layer` blocks holds four matrices with
#   their biases (attention: query-key-value 3C × C and output C × C; MLP: up 4C × C and down C × 4C, with
#   C = `n_embd`) and two layer norms (a weight and a bias of C each). Then the final layer norm, and the head,
#   which is the token table (tied), read whole: every token gets a score.
# - **Not the position table**: a step reads one row of it (the lookup of the token table reads one row too,
#   but the head reads all of it).
# - **The KV cache**: each of the `batch_size` sequences has, in every layer, a key and a value of C numbers
#   for each of its `context_len` cached positions.
#
# Example: GPT-2 124M, one sequence, empty cache: `decode_step_bytes(GPTConfig.from_preset("gpt2"), 1, 0)`
# is 494,613,504, the 494.6 MB the prediction cell printed.
#
# *Hints:* use only the numbers in `config` (`n_layer`, `n_embd`, `vocab_size`): the checks include GPT-2
# medium, which takes seconds to build. To see what a block holds, print the names and shapes in
# `GPT(GPTConfig.from_preset("tiny")).named_parameters()` (`from minigpt.model import GPT`).

# %% nbgrader={"grade": false, "grade_id": "decode_step_bytes", "locked": false, "schema_version": 3, "solution": true, "task": false}
def decode_step_bytes(config: GPTConfig, batch_size: int, context_len: int) -> int:
    """Bytes one decode step reads in float32: every weight once, plus the KV cache of every sequence."""
    ### BEGIN SOLUTION
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    attention = (3 * C * C + 3 * C) + (C * C + C)  # query-key-value and output, weights and biases
    mlp = (4 * C * C + 4 * C) + (C * 4 * C + C)  # up and down
    block = attention + mlp + 2 * (2 * C)  # and two layer norms, a weight and a bias each
    weights = L * block + 2 * C + V * C  # the final norm and the head (the token table); no position table
    cache = 2 * L * batch_size * context_len * C  # a key and a value per layer, sequence and cached position
    return 4 * (weights + cache)  # float32: 4 bytes a number
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_decode_step_bytes", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_decode_step_bytes(decode_step_bytes)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_decode_step_bytes, decode_step_bytes)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 4: the tokens per second memory allows
#
# A step cannot take less time than its bytes divided by the bandwidth, and it makes one token for each
# sequence of the batch. Write `bandwidth_bound(config, bandwidth_gb_s, batch_size, context_len)`: the most
# tokens per second, a float,
#
#     tokens/s ≤ batch_size × bandwidth / bytes per step
#
# with the bandwidth in GB/s (1 GB = 10⁹ bytes) and the bytes from your `decode_step_bytes`. Example: GPT-2
# 124M, one sequence, empty cache, at the prediction cell's example bandwidth:
# `bandwidth_bound(GPTConfig.from_preset("gpt2"), 25, 1, 0)` is `25e9 / 494_613_504`, the 50.5 tokens/s
# printed there.

# %% nbgrader={"grade": false, "grade_id": "bandwidth_bound", "locked": false, "schema_version": 3, "solution": true, "task": false}
def bandwidth_bound(config: GPTConfig, bandwidth_gb_s: float, batch_size: int, context_len: int) -> float:
    """The most tokens/s a memory of ``bandwidth_gb_s`` GB/s allows: the batch's tokens over a step's bytes."""
    ### BEGIN SOLUTION
    seconds_per_step = decode_step_bytes(config, batch_size, context_len) / (bandwidth_gb_s * 1e9)
    return batch_size / seconds_per_step  # one token per sequence each step
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_bandwidth_bound", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_bandwidth_bound(bandwidth_bound)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_bandwidth_bound, bandwidth_bound)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 5: one block of GGUF's Q4_0
#
# int8 (Exercise 1) stores a weight in a byte with one scale per row. llama.cpp's files (GGUF, chapter 12's
# Step 6) go further: **Q4_0** stores a weight in 4 bits, half a byte, with one scale for every *block* of 32
# numbers along a row, so that one large weight spoils the rounding of its own block only. The `gguf` package
# (llama.cpp's own Python package) quantizes a block like this:
#
#     d    = (the x of largest magnitude, its sign kept) / -8     # the first one, if two tie
#     code = trunc(x / d + 8.5), clipped to 0 ... 15             # 16 levels: 4 bits
#     x   ≈ (code - 8) · d
#
# The x of largest magnitude gets x / d = -8, code 0; an x of the same size and the other sign gets +8, code 16,
# one past what 4 bits hold, so it is clipped to 15. trunc(· + 8.5) rounds a half *up*, unlike `torch.round`.
# The next cell asks the `gguf` package for the block's size and shows its bytes for an example block.

# %%
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize

numbers, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_0]
print(f"Q4_0: blocks of {numbers} numbers in {nbytes} bytes: 2 for d (a float16), then {nbytes - 2} bytes holding "
      f"{numbers} codes of 4 bits (0 to 15, x = (code - 8) · d, code = trunc(x / d + 8.5)); "
      f"{8 * nbytes / numbers} bits a number")
example = (torch.arange(32.0) - 8) / 4  # (32,): -2, -1.75, ..., 5.75; its largest magnitude, 5.75, is positive
example_bytes = gguf_quantize(example.numpy()[None], GGMLQuantizationType.Q4_0)[0]  # (18,) uint8, numpy
print("the gguf package's bytes for the example block:", example_bytes.tolist())

# %% [markdown]
# Write `quantize_q4_0_block(x)`: for one block `x` of 32 float32 numbers, return GGUF's 18 bytes as a
# `torch.uint8` tensor of shape (18,):
#
# - bytes 0 and 1: d as a float16;
# - the 16 bytes after them: the 32 codes, two per byte: byte j of these holds the code of x[j] in its low 4 bits
#   and the code of x[j + 16] in its high 4 bits.
#
# A block of zeros has d = 0: gguf multiplies x by 1 / d, taking 1 / d as 0 when d is 0 (every code is then
# 8), where x / d would divide 0 by 0. The codes come from d in float32; only the stored d is rounded to float16.
# `quantize_q4_0_block(example)` must give the bytes printed above.
#
# *Hints:* `x.abs().argmax()` is the position of the largest magnitude (the first, on a tie); `torch.trunc`
# drops the fraction; `a | b << 4` is the byte whose low 4 bits are a and high 4 bits b (both `torch.uint8`);
# `d.reshape(1).half().view(torch.uint8)` is d's two bytes as a float16; `torch.cat` joins tensors.

# %% nbgrader={"grade": false, "grade_id": "quantize_q4_0_block", "locked": false, "schema_version": 3, "solution": true, "task": false}
def quantize_q4_0_block(x: torch.Tensor) -> torch.Tensor:
    """GGUF's Q4_0 bytes of one block of 32 numbers ``x``: d as float16, then 16 bytes of two 4-bit codes each."""
    ### BEGIN SOLUTION
    d = x[x.abs().argmax()] / -8  # the x of largest magnitude, its sign kept: it gets code 0
    inverse = 1 / d if d != 0 else torch.zeros(())  # gguf multiplies by 1 / d; a block of zeros: every code 8
    codes = torch.trunc(x * inverse + 8.5).clamp(0, 15).to(torch.uint8)  # (32,); a -8·d lands on 16: clipped
    packed = codes[:16] | codes[16:] << 4  # (16,): byte j holds x[j]'s code (low 4 bits) and x[j + 16]'s (high)
    return torch.cat([d.reshape(1).half().view(torch.uint8), packed])  # (18,): d's 2 bytes, then the codes
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_quantize_q4_0_block", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_quantize_q4_0_block(quantize_q4_0_block)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_quantize_q4_0_block, quantize_q4_0_block)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 6: back from 4 bits
#
# Write `dequantize_q4_0_block(block)`: the 32 float32 numbers that one Q4_0 block, its 18 bytes as a
# `torch.uint8` tensor, stands for: x[j] = (code of x[j] - 8) · d, with d from bytes 0 and 1 (a float16) and
# the codes unpacked in the order of Exercise 5 (byte j of the 16: x[j] in the low 4 bits, x[j + 16] in the
# high 4 bits).
#
# *Hints:* `block[:2].view(torch.float16)` reads d; `byte & 15` is a byte's low 4 bits and `byte >> 4` its
# high 4 bits; a `torch.uint8` has no negative numbers (`3 - 8` wraps around to `251`), so widen the codes with
# `.long()` before subtracting 8.

# %% nbgrader={"grade": false, "grade_id": "dequantize_q4_0_block", "locked": false, "schema_version": 3, "solution": true, "task": false}
def dequantize_q4_0_block(block: torch.Tensor) -> torch.Tensor:
    """The 32 float32 numbers that one GGUF Q4_0 ``block`` (18 bytes, torch.uint8) stands for."""
    ### BEGIN SOLUTION
    d = block[:2].view(torch.float16).float()  # (1,): the scale
    codes = torch.cat([block[2:] & 15, block[2:] >> 4]).long()  # (32,): x[0..15] low 4 bits, x[16..31] high
    return (codes - 8).float() * d  # widened first: in uint8, 3 - 8 would wrap around
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dequantize_q4_0_block", "locked": true, "schema_version": 3, "solution": false, "task": false, "points": 1}
check_dequantize_q4_0_block(dequantize_q4_0_block)
### BEGIN HIDDEN TESTS
from minigpt.exercises.grading import grade

grade(check_dequantize_q4_0_block, dequantize_q4_0_block)
### END HIDDEN TESTS

# %% [markdown]
# ## To think about: an open question
#
# int8 weights make a step read about a quarter of the bytes, so the bound is almost four times higher. Would
# you expect decoding to become four times faster? What could keep it from getting there, and when does the
# bound itself stop being what limits the speed?
#
# There is no single right answer: write yours in a few sentences, from what this notebook and
# [chapter 12](../12_memory_bound.ipynb) showed. The
# [solutions notebook](../solutions/12_memory_bound_solutions.ipynb) ends with one worked answer.

# %% [markdown] nbgrader={"grade": true, "grade_id": "open_question", "locked": false, "schema_version": 3, "solution": true, "task": false, "points": 1}
# ## Worked answer
#
# Not four times, most likely. The bound is a floor on the time of a step, set by the bytes alone; a step
# also has to *use* those bytes. An int8 weight must be turned back into a number the multiply can use,
# either widened to float as it is read (weight-only int8) or multiplied in integers after the activations are
# rounded to 8 bits too (dynamic int8). Either costs instructions per weight, and how many depends on the
# kernel torch has for the CPU at hand: `docs/performance.md` notes that torch's weight-only kernel ran *slower*
# than fp32 at batch 1, on an AVX2 machine and on an AVX-512 Xeon alike. And not everything
# shrinks: the biases, norms and one scale per row stay float32, and so does the KV cache, which grows with
# the batch and the context (Exercise 3) and is untouched by int8 weights.
#
# The bound stops being the limit in two ways. From below: with small models and batch 1, each token also
# pays a fixed cost that has nothing to do with bytes, Python and the launch of a hundred or more small
# operations; when that cost is larger than bytes / bandwidth, halving the bytes changes little. From above:
# with a large batch, the weights are read once for many tokens (Exercise 4), so the arithmetic per byte
# grows with the batch until the processor, not the memory, is what a step waits for; past that point the
# bandwidth bound is far above the real speed, and int8 helps only if the integer arithmetic itself is faster.
#
# So int8 weights pay most where decoding is memory-bound and lean: batch 1 or small batches, a model large
# enough that its weights dwarf the per-token overhead, and a kernel that reads int8 at the memory's speed.
# The way to know on a given machine is the one of chapter 12: measure the tokens/s and compare them with
# the bound.
#
# #### Rubric (1 point)
#
# - **1 point**: answers no, or not in general, and names at least two things that keep int8 from a fourfold speed-up or make the bound stop mattering, from the notebook or chapter 12: turning int8 back into numbers costs instructions (torch's weight-only kernel ran slower than fp32 at batch 1, `docs/performance.md`), the KV cache, biases, norms and scales stay float32, a fixed cost per token (Python, launching small operations) dominates small models, and with a large batch the arithmetic, not the memory, limits a step.
# - **½ point**: answers no with one reason, or names reasons without saying when the bound stops being the limit.
# - **0 points**: "yes, four times faster, since it reads a quarter of the bytes", with nothing more.
