/* One GPT-2 decode step in C: every layer of one new token per row, in one call, on the threads torch uses.
 *
 * Why this exists (chapter 12): a batch-1 decode step reads ~0.5 GB of weights and does little else, so
 * its speed is set by memory bandwidth. In torch the matmuls run at that speed, but the ~300 small ops
 * between them (layer norms, GELU, attention, residual adds) each pay a dispatcher's and Python's toll,
 * and pay it cold: every matmul streams megabytes through the caches and evicts the code and data the
 * next op needs. Here a whole step is one function: one parallel region, a few barriers per layer, and
 * nothing between the weight streams but a few kilobytes of arithmetic.
 *
 * It computes what minigpt.fast.FastDecoder._forward computes for T = 1 (tests check the logits and
 * the greedy tokens), reading the decoder's own tensors in place:
 *   - matrices are nn.Linear's (out, in), row-major: output o is the dot product of row o with the input,
 *     so each thread streams a contiguous block of rows; float32, or int8 with a scale per row, whose
 *     inputs are quantized as torch's int8 kernel (fbgemm's dynamic linear) quantizes them, or float16,
 *     bfloat16, or GGUF's Q8_0 and Q4_0 blocks, all four widened to float32 in registers and multiplied
 *     with float32 inputs (the `format` of StepArgs says which, for every matrix and the head), or for Q8_0
 *     and Q4_0, with StepArgs' `activations` Q8_0_INPUTS, llama.cpp's arithmetic: the inputs rounded to Q8_0
 *     blocks too, and each block's dot product an integer sum;
 *   - each layer's cache is (max_batch, max_len, 2C): per position its key, then its value.
 * Every output is computed by one thread in a fixed order, so the numbers do not depend on how many
 * threads run. The vector width is the widest the build was told the CPU has (minigpt/fast/native.py asks
 * torch which instructions this CPU runs and passes the matching compiler flags).
 */
#include <math.h>
#include <stdint.h>
#include <omp.h>
/* LAYER's entries (LN_1, C_ATTN, ... CACHE, PER_LAYER), the StepArgs struct and the exported functions'
 * prototypes: generated from minigpt/fast/layout.py at build time, so Python and C read one declaration */
#include "decode_step_layout.h"
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
/* VL floats in one register; aligned(4) lets a load start at any float. vi: VL int32s */
typedef float vf __attribute__((vector_size(VL * sizeof(float)), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));
typedef uint32_t vu __attribute__((vector_size(VL * sizeof(uint32_t))));
/* VL 16-bit numbers (float16 or bfloat16 bits), and VL int8 codes, loadable from any address */
typedef uint16_t vh __attribute__((vector_size(VL * sizeof(uint16_t)), aligned(1)));
typedef int8_t vb __attribute__((vector_size(VL), aligned(1)));

/* lane by lane, a where mask (a vector comparison's result) is set, else b */
static inline vf pick(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

enum { STORE, ADD };  /* what a matvec does with each output r: y = r, or y += r */

/* the sum of v's lanes, by a tree: the upper half of the lanes added to the lower half until one is left
 * (log2 VL dependent adds rather than VL; the same order on every CPU of a vector width) */
static inline float hsum(vf v) {
    float a[VL];
    memcpy(a, &v, sizeof a);
#pragma GCC unroll 8
    for (int w = VL / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) a[i] += a[i + w];
    return a[0];
}

/* y (B, n) = layer_norm(x (B, n)) * w + b, as torch's: biased variance, eps 1e-5 */
static void layer_norm(const float *x, const float *w, const float *b, float *y, int B, int n) {
    for (int r = 0; r < B; r++, x += n, y += n) {
        float mean = 0.f, var = 0.f;
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
        float rstd = 1.f / sqrtf(var / n + 1e-5f);
        for (int i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/* a . b over n floats, VL at a time: attention's query-key products, one per cached position and head
 * (VL independent sums instead of one chain of dependent adds) */
static inline float dot(const float *a, const float *b, int n) {
    vf acc = {0};
    int i = 0;
    for (; i + VL <= n; i += VL) acc += *(const vf *)(a + i) * *(const vf *)(b + i);
    float s = hsum(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}


/* e^x for x in [-87, 0], VL at a time (Cephes' expf: x = n ln 2 + r, e^r by a polynomial, 2^n from the
 * exponent bits; within 2 units in the last place): GELU's tanh needs it for every MLP activation */
static inline vf exp_nonpositive(vf x) {
    vf lowest = (vf){0} - 87.f;
    x = pick(x < lowest, lowest, x);  /* clamp: e^-87 is 1.6e-38 */
    vf v = x * 1.44269504088896341f - 0.5f;  /* n = round(x / ln 2) = ceil(v) */
    vf n = __builtin_convertvector(__builtin_convertvector(v, vi), vf);  /* v truncated towards 0: ceil(v) */
    x = x - n * 0.693359375f + n * 2.12194440e-4f;  /* r = x - n ln 2, ln 2 in two parts */
    vf p = 1.9875691500e-4f * x + 1.3981999507e-3f;
    p = p * x + 8.3334519073e-3f;
    p = p * x + 4.1665795894e-2f;
    p = p * x + 1.6666665459e-1f;
    p = p * x + 5.0000001201e-1f;
    p = p * x * x + x + 1.f;
    return p * (vf)((__builtin_convertvector(n, vi) + 127) << 23);  /* times 2^n, built as a float's bits */
}

/* y = gelu(y) for n numbers, GPT-2's tanh form: 0.5 y (1 + tanh(u)), u = sqrt(2/pi) (y + 0.044715 y^3),
 * with tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|) <= 1, which cannot overflow */
static void gelu(float *y, int n) {
    int i = 0;
    for (; i + VL <= n; i += VL) {
        vf x = *(vf *)(y + i), u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        vi sign = (vi)u & INT32_MIN, magnitude = (vi)u & INT32_MAX;  /* u's sign bit, and |u| */
        vf e = exp_nonpositive(-2.f * (vf)magnitude), t = (1.f - e) / (1.f + e);
        *(vf *)(y + i) = 0.5f * x * (1.f + (vf)((vi)t | sign));
    }
    for (; i < n; i++) y[i] = 0.5f * y[i] * (1.f + tanhf(0.7978845608028654f * (y[i] + 0.044715f * y[i] * y[i] * y[i])));
}

static inline void put(float *y, float r, int mode) {
    if (mode == ADD) *y += r;
    else *y = r;
}

/* --- 16-bit weights: half the bytes of float32, widened to float32 in registers ------------------------
 * A float16 (IEEE binary16) has 5 exponent and 10 mantissa bits, a bfloat16 float32's 8 exponent bits and
 * 7 mantissa bits: a bfloat16 is the top half of a float32, so widening it is a 16-bit shift on any CPU.
 * A float16 needs its exponent rebiased: F16C (AVX2 CPUs that have it; the build adds -mf16c only where
 * the CPU says so) and AVX-512 do it in one instruction, 8 or 16 at a time; elsewhere (the portable build)
 * half_to_float and widen_f16 do it with integer operations. Both are exact: every float16 is a float32. */

static inline vi pick_vi(vi mask, vi a, vi b) { return (a & mask) | (b & ~mask); }

/* VL 16-bit numbers from p, zero-extended to 32 bits; VL int8 numbers from p, sign-extended. By name where
 * the vector width is known: GCC builds the generic conversion from 8-byte vectors one lane at a time. */
static inline vi widen_u16(const uint16_t *p) {
#if defined(__AVX512F__)
    return (vi)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
#elif defined(__AVX2__)
    return (vi)_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
#else
    return __builtin_convertvector(*(const vh *)p, vi);
#endif
}
static inline vi widen_i8(const int8_t *p) {
#if defined(__AVX512F__)
    return (vi)_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p));
#elif defined(__AVX2__)
    return (vi)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
#else
    return __builtin_convertvector(*(const vb *)p, vi);
#endif
}

/* float16 bits to the float32 of the same value, for any bits: the exponent and mantissa move into
 * float32's places and the exponent is rebiased (15 -> 127); infinities and NaNs get the top exponent, and
 * a subnormal, whose value is mantissa * 2^-24, is renormalized by one float subtraction (F. Giesen's
 * method: rebiased as if normal it reads 2^-14 (1 + mantissa 2^-10); take 2^-14 off). */
static inline float half_to_float(uint16_t bits) {
#if defined(__F16C__)
    return _cvtsh_ss(bits);
#else
    uint32_t o = (uint32_t)(bits & 0x7fff) << 13, e = o & (0x7c00u << 13);
    float f;
    o += (127 - 15) << 23;
    if (e == 0x7c00u << 13) o += (128 - 16) << 23;  /* infinity, NaN */
    else if (e == 0) {  /* zero, subnormal */
        o += 1 << 23;
        memcpy(&f, &o, sizeof f);
        f -= 6.103515625e-05f;  /* 2^-14 */
        memcpy(&o, &f, sizeof f);
    }
    o |= (uint32_t)(bits & 0x8000) << 16;
    memcpy(&f, &o, sizeof f);
    return f;
#endif
}

/* VL float16 numbers from p, as float32: F16C's or AVX-512's instructions, else half_to_float's steps
 * lane by lane (a vector cast (vf) reinterprets the bits) */
static inline vf widen_f16(const uint16_t *p) {
#if defined(__AVX512F__) && defined(__F16C__)
    /* two 256-bit conversions, not one 512-bit: timing on an AVX-512 AMD EPYC (Zen 4) found the fp16 step 1.4x
     * faster so (docs/performance.md); the 512-bit form stays where the build has no F16C flag */
    __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
           hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
    return (vf)_mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
#elif defined(__AVX512F__)
    return (vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#elif defined(__F16C__) && VL == 8
    return (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    vi h = widen_u16(p), o = (h & 0x7fff) << 13, e = o & (0x7c00 << 13);
    o += (127 - 15) << 23;
    o = pick_vi(e == (0x7c00 << 13), o + ((128 - 16) << 23), o);  /* infinity, NaN */
    vf subnormal = (vf)(o + (1 << 23)) - 6.103515625e-05f;  /* zero, subnormal: minus 2^-14 */
    o = pick_vi(e == 0, (vi)subnormal, o);
    return (vf)(o | ((h & 0x8000) << 16));
#endif
}

/* VL bfloat16 numbers from p, as float32: each one's bits become the top half of a float32's */
static inline vf widen_bf16(const uint16_t *p) { return (vf)(widen_u16(p) << 16); }

/* VL weights of a float32, float16 or bfloat16 row from element i on, as float32 (`format` a constant) */
static inline __attribute__((always_inline)) vf weights_at(const void *W, int64_t i, const int format) {
    if (format == FP16) return widen_f16((const uint16_t *)W + i);
    if (format == BF16) return widen_bf16((const uint16_t *)W + i);
    return *(const vf *)((const float *)W + i);
}

/* one weight, as weights_at: the tail of a row whose length is not a multiple of VL */
static inline float weight_at(const void *W, int64_t i, int format) {
    if (format == FP16) return half_to_float(((const uint16_t *)W)[i]);
    if (format == BF16) {
        uint32_t wide = (uint32_t)((const uint16_t *)W)[i] << 16;  /* the top half of a float32 */
        float f;
        memcpy(&f, &wide, sizeof f);
        return f;
    }
    return ((const float *)W)[i];
}

/* Every format but int8 is multiplied ONE ROW AT A TIME: each thread reads its rows of the matrix in memory
 * order, one long stream, which the CPU's prefetchers follow ahead of the loads. Interleaving R rows instead
 * makes R short streams (a Q8_0 row of 768 weights is 13 cache lines, a float32 row of the small shipped
 * model's 12), each of which the prefetchers must find again, and the cores wait for memory: timing found one
 * row at a time 1.4x to 1.9x faster for the 16-bit and block formats on GPT-2 124M's shape, and for float32
 * on the small model, and float32 on 124M's shape no slower (docs/performance.md).
 * Within a row, PARTS independent partial sums (over alternate chunks of VL weights, or alternate blocks)
 * keep several multiply-adds in flight; they are added in one fixed order, whatever the batch, so a row's
 * result does not depend on the batch around it. Up to NB_ROWWISE rows of the batch share each weight.
 * Rows are taken ROW_GROUP at a time: read one after another, as above, each to a vector of its partial
 * sums, and only then finished (each vector's lanes added up, bias and store), all of the group's together.
 * Finishing a row is a chain of dependent adds, as long as reading a short row (the small shipped model's
 * are 192 weights); so the next rows' loads no longer wait behind it, and the dispatch per call is paid
 * once per group. A row is summed the same way in a group or alone (a thread's last rows), so its result
 * does not depend on where a thread's share starts. Timing found the small model's head 1.1x (float32) to
 * 1.6x (Q8_0) faster so, and GPT-2 124M's matrices 1.05x to 1.3x (docs/performance.md). */
enum { PARTS = 4, NB_ROWWISE = 2, ROW_GROUP = 4 };

/* out[k * NB + j] = the float32, float16 or bfloat16 row k of W (NR rows, `stride` bytes apart) . row j of x
 * (NB of them): a 16-bit weight is widened as it is loaded, so the sums are those of float32 weights of the
 * same values */
static inline __attribute__((always_inline)) void row_dots_float(const void *W, int64_t stride, const int NR,
                                                                 const float *x, int n_in, const int NB,
                                                                 const int format, float *out) {
    const int64_t step = stride / (format == F32 ? 4 : 2);  /* weights from one row to the next */
    vf total[ROW_GROUP][NB_ROWWISE];
    int i = 0;
    for (int k = 0; k < NR; k++) {  /* row after row, in memory order */
        vf acc[NB_ROWWISE][PARTS] = {{{0}}};
        for (i = 0; i + PARTS * VL <= n_in; i += PARTS * VL)
            for (int p = 0; p < PARTS; p++) {
                vf w = weights_at(W, k * step + i + p * VL, format);
                for (int j = 0; j < NB; j++) acc[j][p] += w * *(const vf *)(x + (int64_t)j * n_in + i + p * VL);
            }
        for (; i + VL <= n_in; i += VL) {
            vf w = weights_at(W, k * step + i, format);
            for (int j = 0; j < NB; j++) acc[j][0] += w * *(const vf *)(x + (int64_t)j * n_in + i);
        }
        for (int j = 0; j < NB; j++) total[k][j] = (acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]);
    }
    for (int k = 0; k < NR; k++)  /* the rows' sums finished together, after all their loads */
        for (int j = 0; j < NB; j++) {
            float *o = out + k * NB + j;
            *o = hsum(total[k][j]);
            for (int t = i; t < n_in; t++)  /* the tail when n_in is not a multiple of VL */
                *o += weight_at(W, k * step + t, format) * x[(int64_t)j * n_in + t];
        }
}

/* --- GGUF's block formats, Q8_0 and Q4_0: the bytes llama.cpp reads, streamed as they are --------------
 * A row of n weights is n / 32 blocks; a block is its scale d (float16) and then 32 codes: Q8_0 int8 codes
 * q (34 bytes, weight = q d), Q4_0 4-bit codes q in 0..15 two per byte (18 bytes, weight = (q - 8) d; byte
 * i holds code i in its low half and code i + 16 in its high half). A block's scale and codes sit side by
 * side, so a row is read in one pass, in memory order (one row at a time, as the 16-bit formats), and the
 * bytes read per weight are 34/32 or 18/32: nothing else is read per weight. The inputs stay float32: per
 * block and row, s = sum of code * x over its 32 weights in float32, then the row's sum gains s * d. That
 * is the product with the dequantized weights, summed in another order: equal to it within float32's
 * rounding. (llama.cpp instead rounds the inputs to 8 bits too: this step does so where StepArgs'
 * `activations` is Q8_0_INPUTS, below.) */
enum { QK = 32 };  /* weights per block */

static inline int64_t block_bytes(int format) { return format == Q8_0 ? 2 + QK : 2 + QK / 2; }

/* the float16 scale at the start of a block (any address: blocks are 34 or 18 bytes) */
static inline float block_scale(const uint8_t *block) {
    uint16_t bits;
    memcpy(&bits, block, sizeof bits);
    return half_to_float(bits);
}

/* Q4_0: 32 codes in 16 bytes, four 32-bit words. Lane j of a register of VL takes word j % 4 shifted right
 * by 4 (j / 4) bits, masked to 4 bits: every lane one shift and one mask (the four words repeated across the
 * register, one vector shift with a shift per lane), no byte shuffles, which AVX2 runs on one port only.
 * The code lane j gets is code (j / 4) / 2 + 16 ((j / 4) % 2) + 4 (j % 4) of the block, whatever VL is; the
 * input is read in that order (q4_0_order puts each block's 32 inputs so, once per matrix). */
static inline int q4_0_code(int j) { return j / 4 / 2 + 16 * (j / 4 % 2) + 4 * (j % 4); }

/* x (n numbers, n a multiple of QK) reordered per block for block_dots: out[i + j] = x[i + q4_0_code(j)] */
static void q4_0_order(const float *x, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i += QK)
        for (int j = 0; j < QK; j++) out[i + j] = x[i + q4_0_code(j)];
}

/* block b of a Q8_0 or Q4_0 row times NB rows of float32 inputs x (Q4_0's reordered by q4_0_order), added
 * into the partial sums acc[j]: per row of the inputs, s = sum of code * x over the block's 32 weights in
 * float32, then acc[j] += s * d. Q8_0: VL int8 codes at a time widened to float32. */
static inline __attribute__((always_inline)) void block_dots(const uint8_t *block, const float *x, int64_t n_in,
                                                             const int NB, const int format,
                                                             vf acc[NB_ROWWISE][PARTS], const int p) {
    static const uint32_t shift[QK] = {0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
                                       16, 16, 16, 16, 20, 20, 20, 20, 24, 24, 24, 24, 28, 28, 28, 28};  /* 4 (j / 4) */
    vu words;  /* Q4_0: the block's four words of codes, repeated across the register */
    if (format == Q4_0) {
#if defined(__AVX512F__)
        words = (vu)_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(block + 2)));
#elif defined(__AVX2__)
        words = (vu)_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(block + 2)));
#else
        uint32_t four[4];
        memcpy(four, block + 2, sizeof four);
        for (int l = 0; l < VL; l++) words[l] = four[l % 4];
#endif
    }
    vf s[NB_ROWWISE] = {{0}};
    for (int c = 0; c < QK; c += VL) {
        /* Q4_0: a code q (0..15) set into the low bits of 2^23's is the float 2^23 + q, exactly; less 2^23 + 8,
         * q - 8 (one bitwise op, AVX-512's vpternlogd, and a subtraction, in place of a conversion) */
        vf w = format == Q4_0 ? (vf)(((words >> *(const vu *)(shift + c)) & 15) | 0x4B000000u) - 8388616.f
                              : __builtin_convertvector(widen_i8((const int8_t *)block + 2 + c), vf);
        for (int j = 0; j < NB; j++) s[j] += w * *(const vf *)(x + j * n_in + c);
    }
    float d = block_scale(block);
    for (int j = 0; j < NB; j++) acc[j][p] += s[j] * d;
}

/* out[k * NB + j] = the Q8_0 or Q4_0 row k of W (NR rows, `stride` bytes apart) . row j of the float32 inputs
 * x (NB of them), PARTS partial sums over alternate blocks */
static inline __attribute__((always_inline)) void row_dots_blocks(const uint8_t *W, int64_t stride, const int NR,
                                                                  const float *x, int n_in, const int NB,
                                                                  const int format, float *out) {
    int64_t per_block = block_bytes(format), blocks = n_in / QK;
    vf total[ROW_GROUP][NB_ROWWISE];
    for (int k = 0; k < NR; k++) {  /* row after row, in memory order */
        vf acc[NB_ROWWISE][PARTS] = {{{0}}};
        for (int64_t b = 0; b < blocks; b += PARTS)
#pragma GCC unroll 4
            for (int p = 0; p < PARTS; p++) {  /* unrolled, so that every partial sum stays in a register */
                if (b + p == blocks) break;
                block_dots(W + k * stride + (b + p) * per_block, x + (b + p) * QK, n_in, NB, format, acc, p);
            }
        for (int j = 0; j < NB; j++) total[k][j] = (acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]);
    }
    for (int k = 0; k < NR; k++)  /* the rows' sums finished together, after all their loads */
        for (int j = 0; j < NB; j++) out[k * NB + j] = hsum(total[k][j]);
}

/* int8 weights meet 8-bit activations, as in fbgemm's dynamic linear (torch's quantize_dynamic, and
 * minigpt.quantize's "dynamic" kernel, which this step must agree with token for token): the whole input
 * (B, n) is stored as unsigned integers xq = round(x / s) + zp, one scale s and zero point zp for all of
 * it (quantize_input), so a dot product is a sum of integer products, which the CPU does 64 (AVX-512
 * VNNI) or 32 (AVX2) at a time (QSTEP below), and zp * (the row's sum of weights) comes off afterwards.
 * The integer sums are exact on every CPU. Widening each int8 weight to float instead (weight-only int8)
 * costs three instructions per VL weights, which keeps the cores busier than the memory. */
#if defined(__AVX512VNNI__)
#define QSTEP 64
typedef __m512i vacc;
/* 64 u8 x s8 products, 4 per sum (`seven`: activations in 7 bits, which VNNI needs no help with) */
static inline vacc dot_step(vacc acc, const uint8_t *x, const int8_t *w, const int seven) {
    (void)seven;
    return _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(x), _mm512_loadu_si512(w));
}
static inline int32_t isum(vacc v) { return _mm512_reduce_add_epi32(v); }
#elif defined(__AVX2__)
#define QSTEP 32
typedef __m256i vacc;
/* 32 products. With 7-bit activations (`seven`: where fbgemm reduces the range, on CPUs without VNNI)
 * vpmaddubsw multiplies the bytes as they are and adds pairs into 16 bits, which cannot overflow:
 * 2 * 127 * 127 < 32768. With 8 bits it could, so both are first widened to 16 bits (twice the work). */
static inline vacc dot_step(vacc acc, const uint8_t *x, const int8_t *w, const int seven) {
    if (seven) {
        __m256i pairs = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)x),
                                             _mm256_loadu_si256((const __m256i *)w));
        return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    }
    for (int half = 0; half < 32; half += 16) {
        __m256i xv = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x + half)));
        __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + half)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
    }
    return acc;
}
static inline int32_t isum(vacc v) {
    int32_t t[8];
    _mm256_storeu_si256((__m256i *)t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#define QSTEP 1  /* no vector instructions asked for: one product at a time */
typedef int32_t vacc;
static inline vacc dot_step(vacc acc, const uint8_t *x, const int8_t *w, const int seven) {
    (void)seven;
    return acc + (int32_t)*x * *w;
}
static inline int32_t isum(vacc v) { return v; }
#endif

/* The n numbers x as unsigned 8-bit integers xq, with the scale and zero point x ≈ (xq - zp) * scale,
 * chosen and applied exactly as fbgemm does it (torch's ChooseQuantizationParams, then fbgemm's
 * vectorized Quantize): the range [min, max] widened to hold 0 is spread over [0, qmax], qmax = 255, or
 * 127 where fbgemm is told to reduce the range (CPUs without VNNI). */
static void quantize_input(const float *x, int n, int qmax, uint8_t *xq, float *scale, int32_t *zp) {
    vf lo_v = {0}, hi_v = {0};
    int i = 0;
    for (; i + VL <= n; i += VL) {  /* VL at a time: this runs over every matrix's input, B rows of it */
        vf v = *(const vf *)(x + i);
        lo_v = pick(v < lo_v, v, lo_v);
        hi_v = pick(v > hi_v, v, hi_v);
    }
    float lo = 0.f, hi = 0.f;
    for (int k = 0; k < VL; k++) {
        lo = lo_v[k] < lo ? lo_v[k] : lo;
        hi = hi_v[k] > hi ? hi_v[k] : hi;
    }
    for (; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    double s = ((double)hi - lo) / qmax;
    if ((float)s == 0.f || isinf(1.f / (float)s)) s = 0.1;
    const float small = 6.1e-5f;  /* fbgemm's smallest scale: a tinier range is widened around its zero */
    if (s < small) {
        float grow = small / (float)s;
        s = small;
        if (lo == 0.f) hi = small * qmax;
        else if (hi == 0.f) lo = -small * qmax;
        else lo *= grow, hi *= grow;
    }
    double from_lo = -lo / s, from_hi = qmax - hi / s;  /* the zero point each end asks for; the smaller error wins */
    double zero = -fabs(lo / s) < qmax - fabs(hi / s) ? from_lo : from_hi;
    *zp = zero < 0 ? 0 : zero > qmax ? qmax : (int32_t)nearbyint(zero);
    *scale = (float)s;
    float inv = 1.f / *scale, z = (float)*zp;
    i = 0;
#if defined(__FMA__) && (defined(__AVX512F__) || defined(__AVX2__))
    for (; i + VL <= n; i += VL) {
        vf t = *(const vf *)(x + i) * inv + z;  /* one rounding (FMA), as fbgemm's x * (1 / scale) + zp */
#if defined(__AVX512F__)
        vi q = (vi)_mm512_cvtps_epi32((__m512)t);  /* to the nearest, ties to even */
#else
        vi q = (vi)_mm256_cvtps_epi32((__m256)t);
#endif
        q = (vi)pick(q < 0, (vf)(q - q), (vf)q);
        q = (vi)pick(q > 255, (vf)(q - q + 255), (vf)q);
        for (int k = 0; k < VL; k++) xq[i + k] = (uint8_t)q[k];
    }
#endif
    for (; i < n; i++) {
        long q = lrintf(fmaf(x[i], inv, z));  /* the same, one number at a time */
        xq[i] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
    }
}

/* out[k * NB + j] = row k of W . row j of xq, for R consecutive int8 rows of W (each n_in long) and NB quantized
 * input rows: R * NB independent integer sums (`seven`: the rows are 7-bit), so the loads of one need not wait
 * for another's, and each weight loaded once serves NB rows of the batch; integers, so the order is free */
static inline __attribute__((always_inline)) void dots_i8(const int8_t *W, const uint8_t *x, int n_in, const int R,
                                                          const int NB, const int seven, int32_t *out) {
    vacc acc[16];
    for (int a = 0; a < R * NB; a++) acc[a] = (vacc){0};
    int i = 0;
    for (; i + QSTEP <= n_in; i += QSTEP)
        for (int j = 0; j < NB; j++)
            for (int k = 0; k < R; k++)
                acc[k * NB + j] = dot_step(acc[k * NB + j], x + (int64_t)j * n_in + i, W + (int64_t)k * n_in + i, seven);
    for (int a = 0; a < R * NB; a++) out[a] = isum(acc[a]);
    for (; i < n_in; i++)
        for (int k = 0; k < R; k++)
            for (int j = 0; j < NB; j++) out[k * NB + j] += (int32_t)x[(int64_t)j * n_in + i] * W[(int64_t)k * n_in + i];
}

/* --- Q8_0 and Q4_0 weights times inputs rounded to Q8_0: llama.cpp's arithmetic -------------------------
 * With `activations` Q8_0_INPUTS, a Q8_0 or Q4_0 matrix first rounds its input rows to Q8_0 blocks, bit for
 * bit as minigpt.quantize.quantize_q8_0 (so that round_weights(model, fmt, activations="q8_0") is this step's
 * readable reference): per block of 32, d = max|x| / 127, codes round-half-away(x * (1/d)), and d stored as a
 * float16 whose value the products use. A block's dot product is then a sum of 32 integer products, exact in
 * int32 (32 * 127 * 127 < 2^31), which AVX2 (vpmaddubsw) or VNNI (vpdpbusd) do 32 at a time from bytes, as
 * they stream, with nothing widened to float per weight; each row's sum gains it times d_w * d_x. */

/* a float32 as the bits of the nearest float16 (ties to even; beyond float16's range, infinity) */
static inline uint16_t float_to_half(float f) {
#if defined(__F16C__)
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    uint32_t x, sign, q, rem;
    memcpy(&x, &f, sizeof x);
    sign = (x >> 16) & 0x8000, x &= 0x7fffffff;
    if (x > 0x7f800000) return sign | 0x7e00;  /* NaN */
    if (x >= 0x477ff000) return sign | 0x7c00;  /* 65520 and beyond round to infinity */
    if (x < 0x33000000) return sign;  /* below 2^-25: rounds to zero (2^-25 itself ties to even, zero) */
    if (x < 0x38800000) {  /* below 2^-14: a float16 subnormal, in units of 2^-24 */
        int shift = 126 - (int)(x >> 23);  /* 14..24: the value is (mantissa with its 1) * 2^(e - 150) */
        uint32_t m = (x & 0x7fffff) | 0x800000, half = 1u << (shift - 1);
        q = m >> shift, rem = m & ((1u << shift) - 1);
        return sign | (q + (rem > half || (rem == half && (q & 1))));
    }
    x -= 112u << 23;  /* the exponent rebiased 127 -> 15; the mantissa rounded from 23 to 10 bits (a carry */
    q = x >> 13, rem = x & 0x1fff;  /* into the exponent is the right answer) */
    return sign | (q + (rem > 0x1000 || (rem == 0x1000 && (q & 1))));
#endif
}

/* GCC fuses a * b - c into one FMA (one rounding) by default, even across statements; q8_0_block must
 * round the product first, as quantize_q8_0 does. Clang fuses only within one expression: never there. */
#if defined(__clang__)
#define PRODUCTS_ROUNDED
#else
#define PRODUCTS_ROUNDED __attribute__((optimize("fp-contract=off")))
#endif

/* one block of 32 numbers x as Q8_0 codes q; its scale's float16 bits returned. v = x * id is one float32
 * rounding (never fused with the subtraction after it: a product just below k + 1/2 that rounds to it is a
 * tie, rounded away), then rounded half away from zero exactly: truncated (|v| <= 127), plus the sign where
 * the exact remainder v - trunc(v) is at least 1/2. */
static inline PRODUCTS_ROUNDED uint16_t q8_0_block(const float *x, int8_t *q) {
    vf m = {0};
    for (int c = 0; c < QK; c += VL) {
        vf a = (vf)((vi) * (const vf *)(x + c) & INT32_MAX);  /* |x| (loaded as vf: any address) */
        m = pick(a > m, a, m);
    }
    float amax = 0.f;
    for (int l = 0; l < VL; l++) amax = m[l] > amax ? m[l] : amax;
    float d = amax / 127.f, id = d == 0.f ? 0.f : 1.f / d;
    for (int c = 0; c < QK; c += VL) {
        vf v = *(const vf *)(x + c) * id;
        vi t = __builtin_convertvector(v, vi);  /* towards zero */
        vf rem = v - __builtin_convertvector(t, vf);  /* exact: |v| < 2^23 */
        t = t - (rem >= 0.5f) + (rem <= -0.5f);  /* a true comparison is -1 in each lane */
        for (int l = 0; l < VL; l++) q[c + l] = (int8_t)t[l];
    }
    return float_to_half(d);
}

void quantize_rows_q8_0(const float *x, int64_t n, int8_t *codes, uint16_t *scales) {
    for (int64_t i = 0; i < n; i += QK) scales[i / QK] = q8_0_block(x + i, codes + i);
}

/* B rows of n_in inputs rounded to Q8_0 for a matrix in `format`, into this thread's scratch xq: the codes
 * (B * n_in int8), then per block what its products need once, whatever the row of weights (B * n_in bytes):
 * for Q8_0 the codes' magnitudes (the sign trick below), for Q4_0 eight int32 lanes that sum to -8 * the
 * block's sum of codes (the weights' codes are 0..15 for -8..7: the -8 comes off in one sum per block, by
 * starting the block's sum from these lanes), then the scales' values as float32 (B * n_in / 32). */
static void q8_0_inputs(const float *x, int64_t n, int format, uint8_t *xq) {
    int8_t *codes = (int8_t *)xq;
    uint8_t *aux = xq + n;
    float *scales = (float *)(xq + 2 * n);
    for (int64_t i = 0; i < n; i += QK) {
        scales[i / QK] = half_to_float(q8_0_block(x + i, codes + i));
        if (format == Q4_0) {
            int32_t lanes[8] = {0};
            for (int c = 0; c < QK; c++) lanes[0] -= 8 * codes[i + c];
            memcpy(aux + i, lanes, sizeof lanes);
        } else
            for (int c = 0; c < QK; c++) aux[i + c] = (uint8_t)(codes[i + c] < 0 ? -codes[i + c] : codes[i + c]);
    }
}

#if defined(__AVX2__) && defined(__FMA__)
/* acc + the 32 products of unsigned bytes u and signed bytes s, four per int32 lane: one vpdpbusd with VNNI
 * on 256-bit registers (AVX512-VL), else vpmaddubsw (pairs into 16 bits, which cannot overflow here: at most
 * 2 * 15 * 127 or 2 * 127 * 127 < 32768) and vpmaddwd against ones (pairs of those into 32 bits) */
static inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#endif

/* out[k * NB + j] = the Q8_0 or Q4_0 row k of W (NR rows, `stride` bytes apart) . row j of the inputs rounded
 * to Q8_0 (q8_0_inputs: codes xc, per-block aux and scales xd, of NB rows), PARTS partial sums over
 * alternate blocks: per block and j, the 32 products' integer sum, as 8 int32 lanes converted to float32,
 * times d_w * d_x, added into 8 float32 lanes (as
 * llama.cpp's kernels do). Q4_0's 16 bytes are unpacked in two steps: the low halves are codes 0..15, the
 * high halves (shifted down) 16..31, both unsigned, times signed inputs. Q8_0's codes are both signed, which
 * vpmaddubsw and vpdpbusd do not take: w * x is |x| * (w with x's sign), |x| unsigned (precomputed per
 * input) and vpsignb giving w x's sign. */
#if defined(__AVX2__) && defined(__FMA__)
/* a block's 32 codes as bytes: Q8_0's as they are (signed), Q4_0's unpacked (unsigned, 0..15) */
static inline __attribute__((always_inline)) __m256i block_codes(const uint8_t *block, const int format) {
    if (format == Q8_0) return _mm256_loadu_si256((const __m256i *)(block + 2));
    __m128i packed = _mm_loadu_si128((const __m128i *)(block + 2));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(15));
}

/* acc + (the block's codes w . one block of input codes x, with its aux) * scale, in 8 float32 lanes */
static inline __attribute__((always_inline)) __m256 block_dot_a8(__m256i w, const int format, const int8_t *xc,
                                                                 const uint8_t *aux, float scale, __m256 acc) {
    __m256i x = _mm256_loadu_si256((const __m256i *)xc), extra = _mm256_loadu_si256((const __m256i *)aux), lanes;
    if (format == Q4_0) lanes = dot_u8s8(extra, w, x);  /* from -8 * sum(x), as its lanes say */
    else lanes = dot_u8s8(_mm256_setzero_si256(), extra, _mm256_sign_epi8(w, x));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(scale), acc);
}
#endif

static inline __attribute__((always_inline)) void row_dots_a8(const uint8_t *W, int64_t stride, const int NR,
                                                              const int format, const int8_t *xc,
                                                              const uint8_t *aux, const float *xd, int n_in,
                                                              const int NB, float *out) {
    int64_t per_block = block_bytes(format), blocks = n_in / QK, b = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 total[ROW_GROUP][NB_ROWWISE];
    for (int k = 0; k < NR; k++, W += stride) {  /* row after row, in memory order */
        __m256 acc[NB_ROWWISE][PARTS];
        for (int j = 0; j < NB_ROWWISE; j++)
            for (int p = 0; p < PARTS; p++) acc[j][p] = _mm256_setzero_ps();
        for (b = 0; b < blocks; b += PARTS) {
            int parts = blocks - b < PARTS ? (int)(blocks - b) : PARTS;  /* the row's last blocks may be fewer */
#pragma GCC unroll 4
            for (int p = 0; p < PARTS; p++) {  /* unrolled, so that every partial sum stays in a register */
                if (p == parts) break;
                const uint8_t *block = W + (b + p) * per_block;
                __m256i w = block_codes(block, format);
                float dw = block_scale(block);
                for (int j = 0; j < NB; j++) {
                    int64_t at = j * (int64_t)n_in + (b + p) * QK;  /* this block of input row j, codes and aux */
                    acc[j][p] = block_dot_a8(w, format, xc + at, aux + at, dw * xd[j * blocks + b + p], acc[j][p]);
                }
            }
        }
        for (int j = 0; j < NB; j++)
            total[k][j] = _mm256_add_ps(_mm256_add_ps(acc[j][0], acc[j][1]), _mm256_add_ps(acc[j][2], acc[j][3]));
    }
    for (int k = 0; k < NR; k++)  /* the rows' sums finished together, after all their loads */
        for (int j = 0; j < NB; j++) out[k * NB + j] = hsum8(total[k][j]);
#else
    (void)aux;
    for (int k = 0; k < NR; k++, W += stride) {
        float acc[NB_ROWWISE] = {0};
        for (b = 0; b < blocks; b++) {
            const uint8_t *block = W + b * per_block;
            float dw = block_scale(block);
            for (int j = 0; j < NB; j++) {
                const int8_t *x = xc + (int64_t)j * n_in + b * QK;
                int32_t sum = 0;
                for (int c = 0; c < QK; c++) {
                    int code = format == Q4_0 ? ((block[2 + c % 16] >> (c / 16 * 4)) & 15) - 8
                                              : ((const int8_t *)block)[2 + c];
                    sum += code * x[c];
                }
                acc[j] += (float)sum * (dw * xd[j * blocks + b]);
            }
        }
        for (int j = 0; j < NB; j++) out[k * NB + j] = acc[j];
    }
#endif
}

/* one weight matrix: (out, in) weights stored as `format` says (F32, INT8, FP16, BF16, Q8_0, Q4_0); int8
 * brings a float32 scale and the sum of its weights per row; `inputs` says what Q8_0 and Q4_0 multiply */
typedef struct {
    const void *w;
    const float *scale;  /* int8 only, else NULL */
    const int32_t *row_sum;
    const float *bias;  /* or NULL */
    int format;
    int inputs;  /* Q8_0 and Q4_0 only: FLOAT32_INPUTS, or Q8_0_INPUTS (rounded to Q8_0 first) */
} Matrix;

/* bytes of one row of n weights in `format` */
static inline int64_t row_bytes(int format, int n) {
    switch (format) {
    case INT8: return n;
    case FP16: case BF16: return 2 * (int64_t)n;
    case Q8_0: case Q4_0: return n / QK * block_bytes(format);
    default: return 4 * (int64_t)n;
    }
}

/* the formats multiplied one row at a time (above): all but int8 */
static inline int rowwise(int format) { return format != INT8; }

/* d = R rows of m (from row o) . NB rows of the input (x; or its quantized xq with scale xs, zero zp; or with
 * Q8_0 inputs, their codes xq, aux and scales xd), finished: scaled and biased. Constant R and NB in each
 * case, so the sums stay in registers; the rowwise formats come with R = ROW_GROUP, or 1. */
static void dots(const Matrix *m, int o, const float *x, const uint8_t *xq, const uint8_t *aux, const float *xd,
                 float xs, int32_t zp, int qmax, int n_in, int R, int NB, float *d) {
    int a8 = m->inputs == Q8_0_INPUTS;
    int32_t n[16];
    int64_t stride = row_bytes(m->format, n_in);
    const void *w = (const uint8_t *)m->w + o * stride;  /* row o */
#define ROWS(nr, nb)                                                                                  \
    switch (m->format) {                                                                              \
    case F32: row_dots_float(w, stride, nr, x, n_in, nb, F32, d); break;                              \
    case FP16: row_dots_float(w, stride, nr, x, n_in, nb, FP16, d); break;                            \
    case BF16: row_dots_float(w, stride, nr, x, n_in, nb, BF16, d); break;                            \
    case Q8_0:                                                                                        \
        if (a8) row_dots_a8(w, stride, nr, Q8_0, (const int8_t *)xq, aux, xd, n_in, nb, d);           \
        else row_dots_blocks(w, stride, nr, x, n_in, nb, Q8_0, d);                                    \
        break;                                                                                        \
    default:                                                                                          \
        if (a8) row_dots_a8(w, stride, nr, Q4_0, (const int8_t *)xq, aux, xd, n_in, nb, d);           \
        else row_dots_blocks(w, stride, nr, x, n_in, nb, Q4_0, d);                                    \
    }
#define CASE(r, nb)                                                                                   \
    case r * 8 + nb: dots_i8(w, xq, n_in, r, nb, qmax <= 127, n); break;
    if (rowwise(m->format) && R == ROW_GROUP && NB == 1) {
        ROWS(ROW_GROUP, 1)
    } else if (rowwise(m->format) && R == ROW_GROUP) {
        ROWS(ROW_GROUP, 2)
    } else if (rowwise(m->format) && NB == 1) {  /* the last rows of a thread's share, one at a time */
        ROWS(1, 1)
    } else if (rowwise(m->format)) {
        ROWS(1, 2)
    } else
        switch (R * 8 + NB) {
            CASE(16, 1) CASE(4, 1) CASE(4, 2) CASE(4, 3) CASE(4, 4) CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(1, 4)
        }
#undef ROWS
#undef CASE
    for (int k = 0; k < R; k++)
        for (int j = 0; j < NB; j++) {
            float *y = d + k * NB + j;
            if (m->format == INT8) *y = (float)(n[k * NB + j] - zp * m->row_sum[o + k]) * xs * m->scale[o + k];
            if (m->bias) *y += m->bias[o + k];
        }
}

/* rows [lo, hi) of y (B, ldy) = x (B, n_in) @ W^T + bias, each output stored, GELU'd or added per `mode`;
 * an int8 matrix reads x quantized (quantize_input, into xq), a Q4_0 one reads it reordered (q4_0_order,
 * into the same scratch, as floats), a Q8_0 or Q4_0 one over Q8_0 inputs reads it rounded to Q8_0
 * (q8_0_inputs, there too). Every format but int8 reads one row at a time (rowwise), ROW_GROUP rows per
 * call, each for up to NB_ROWWISE rows of the batch at a time. int8 streams 16 rows at once at batch 1,
 * where that many concurrent streams kept the memory busiest (the count was chosen by timing;
 * docs/performance.md), and 4 with a larger batch, each used for up to 4 rows of the batch at a time, read
 * again from the L1 cache, never from memory. */
static void matvec(const Matrix *m, const float *x, uint8_t *xq, int qmax, int B, int n_in, int lo, int hi,
                   float *y, int ldy, int mode) {
    float d[16], xs = 0.f;
    int32_t zp = 0;
    /* int8: 16 rows at batch 1 (memory bound), 4 with a larger batch; the other formats one row at a time
     * (rowwise), ROW_GROUP rows per call, NB_ROWWISE rows of the batch per weight */
    int a8 = m->inputs == Q8_0_INPUTS && (m->format == Q8_0 || m->format == Q4_0);
    int R = rowwise(m->format) ? ROW_GROUP : B == 1 ? 16 : 4, NB_MAX = rowwise(m->format) ? NB_ROWWISE : 4;
    int64_t n = (int64_t)B * n_in;
    const uint8_t *aux = xq + n;  /* Q8_0 inputs: q8_0_inputs' layout */
    const float *xd = (const float *)(xq + 2 * n);
    /* each thread its own copy of the prepared input: no barrier */
    if (m->format == INT8) quantize_input(x, B * n_in, qmax, xq, &xs, &zp);
    if (a8) q8_0_inputs(x, n, m->format, xq);
    else if (m->format == Q4_0) {
        q4_0_order(x, (int64_t)B * n_in, (float *)xq);
        x = (const float *)xq;
    }
    for (int o = lo, rows; o < hi; o += rows) {
        rows = hi - o >= R ? R : 1;
        for (int r0 = 0, nb; r0 < B; r0 += nb) {
            nb = B - r0 < NB_MAX ? B - r0 : NB_MAX;
            dots(m, o, x + (int64_t)r0 * n_in, xq + (int64_t)r0 * n_in, aux + (int64_t)r0 * n_in,
                 xd + (int64_t)r0 * (n_in / QK), xs, zp, qmax, n_in, rows, nb, d);
            for (int k = 0; k < rows; k++)
                for (int j = 0; j < nb; j++) put(y + (int64_t)(r0 + j) * ldy + o + k, d[k * nb + j], mode);
        }
    }
}

static Matrix matrix(const void *const *p, int format, int inputs) {
    return (Matrix){p[0], p[1], p[2], p[3], format, inputs};
}

/* this thread's share [lo, hi) of n outputs */
static inline void share(int n, int *lo, int *hi) {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    *lo = (int)((int64_t)n * t / nt), *hi = (int)((int64_t)n * (t + 1) / nt);
}

/* Attention is split by positions, not by heads: a piece is PIECE consecutive cache positions of one row,
 * all heads, and the threads share the pieces. A piece's keys and values are one contiguous block of
 * memory (a position's keys and values for every head side by side, then the next position's), so its
 * reads stream, as a matrix's rows do. Split by heads, a head's keys of one position lie 2C floats past
 * those of the position before: reads that jump that far wait on memory every time, which at long
 * contexts costs a large share of the step. Each piece makes a partial softmax (as flash-decoding does); every
 * thread then combines a row's pieces in order (attend_combine), so the result depends on neither the
 * thread count nor the batch. */
enum { PIECE = 32 };

static inline int64_t pieces_for(int n) { return (n + PIECE - 1) / PIECE; }  /* pieces covering n positions */
static inline int64_t piece_floats(int C, int n_head) { return C + 2 * n_head; }  /* a piece's partial softmax */

/* one piece: positions [t0, t1) of a row's cache (masked ones left out) against its queries q (C), every
 * head. part gets, per head h: y (hs floats) = sum_t e^(s_t - m) v_t, then after all heads' y, the top
 * score m[h] and the sum l[h] = sum_t e^(s_t - m). scores: (n_head, PIECE) floats of scratch */
static void attend_piece(const float *q, const float *cache, const uint8_t *key_ok, int t0, int t1, int C,
                         int n_head, float *scores, float *part) {
    int hs = C / n_head, n = t1 - t0;
    float scale = 1.f / sqrtf((float)hs), *y = part, *m = part + C, *l = m + n_head;
    for (int t = 0; t < n; t++) {
        const float *k = cache + (int64_t)(t0 + t) * 2 * C;
        for (int h = 0; h < n_head; h++)
            scores[h * PIECE + t] = key_ok && !key_ok[t0 + t] ? -INFINITY : dot(q + h * hs, k + h * hs, hs) * scale;
    }
    for (int h = 0; h < n_head; h++) {  /* softmax's numerators e^(s - m), VL at a time, and their sum */
        float *s = scores + h * PIECE, top = -INFINITY;
        for (int t = 0; t < n; t++) top = s[t] > top ? s[t] : top;
        int t = 0;
        for (; t + VL <= n; t += VL) {  /* a masked position's -inf gives exactly 0: it adds nothing */
            vf x = *(vf *)(s + t);
            *(vf *)(s + t) = pick(x == -INFINITY, (vf){0}, exp_nonpositive(x - top));
        }
        for (; t < n; t++) s[t] = s[t] == -INFINITY ? 0.f : expf(s[t] - top);
        m[h] = top, l[h] = 0.f;
        for (t = 0; t < n; t++) l[h] += s[t];
    }
    for (int i = 0; i < C; i++) y[i] = 0.f;
    for (int t = 0; t < n; t++) {
        const float *v = cache + (int64_t)(t0 + t) * 2 * C + C;
        for (int h = 0; h < n_head; h++) {
            float p = scores[h * PIECE + t];
            for (int i = h * hs; i < (h + 1) * hs; i++) y[i] += p * v[i];
        }
    }
}

/* a row's attention output y (C) from its n pieces, in order: each piece's sums rescaled to the top score
 * of them all, e^(m_piece - m), which makes them one softmax. A piece whose positions are all masked has
 * m = -inf and adds nothing; the last piece holds the row's own token, so some piece always counts. */
static void attend_combine(const float *parts, int n, int C, int n_head, float *y) {
    int hs = C / n_head;
    int64_t stride = piece_floats(C, n_head);
    for (int h = 0; h < n_head; h++) {
        float top = -INFINITY, total = 0.f;
        for (int c = 0; c < n; c++) {
            float m = parts[c * stride + C + h];
            top = m > top ? m : top;
        }
        for (int i = h * hs; i < (h + 1) * hs; i++) y[i] = 0.f;
        for (int c = 0; c < n; c++) {
            const float *part = parts + c * stride;
            float m = part[C + h];
            if (m == -INFINITY) continue;
            float w = expf(m - top);
            total += w * part[C + n_head + h];
            for (int i = h * hs; i < (h + 1) * hs; i++) y[i] += w * part[i];
        }
        for (int i = h * hs; i < (h + 1) * hs; i++) y[i] /= total;
    }
}

/* decode_step's scratch for B tokens (a step's rows times their tokens each), in floats: x (B, C), qkv
 * (B, 3C), mlp (B, 4C) and the attention pieces (B, pieces_for(max_len), piece_floats), shared by the
 * threads; then for each thread thread_floats: a normalized input (B, C), an attention output (B, C), a
 * piece's scores (n_head, PIECE) and a matrix's input prepared for its format (B, 4C) floats: quantized to
 * bytes (int8), reordered (Q4_0), or rounded to Q8_0 (q8_0_inputs: 2 + 1/8 bytes per input) */
static inline int64_t shared_floats(int B, int C, int n_head, int max_len) {
    return (int64_t)B * 8 * C + B * pieces_for(max_len) * piece_floats(C, n_head);
}
static inline int64_t thread_floats(int B, int C, int n_head) { return (int64_t)6 * B * C + n_head * PIECE; }

int64_t work_floats(int B, int C, int n_head, int max_len, int n_threads) {
    return shared_floats(B, C, n_head, max_len) + n_threads * thread_floats(B, C, n_head);
}

/* the layout this library was compiled with (LAYOUT_NUMBERS: PER_LAYER, each entry's start, the size of
 * StepArgs and each field's offset and size), for minigpt.fast.native to compare with its own before the
 * first step: the first n of them into out, and how many there are */
int compiled_layout(int64_t *out, int n) {
    const int64_t numbers[LAYOUT_COUNT] = {LAYOUT_NUMBERS};
    for (int i = 0; i < LAYOUT_COUNT && i < n; i++) out[i] = numbers[i];
    return LAYOUT_COUNT;
}

/* One step: B rows of T tokens each (tokens and positions (B, T)) are written to cache positions
 * [pos, pos + T), each token attending over [0, its own cache position] (key_ok (B * T, max_len): the
 * positions each token may see, NULL for all), and the last token of each row gives its row's logits
 * (B, vocab). T = 1 is a decode step; a larger T is a prompt's pass, with every matrix read once for all its
 * tokens, each computed exactly as a step of its own would compute it (every sum a row's, in a fixed order)
 * in every format but int8, whose inputs share one scale (quantize_input) across all the tokens. `layers`
 * holds PER_LAYER pointers per layer, `head` (vocab, C) in the matrices' `format` (FORMATS in
 * minigpt/fast/layout.py), int8 with `head_scale` and `head_row_sum`; `wte` is float32 whatever the format
 * (the lookup reads one row per token: the decoder passes the rounded table's values); `work` holds
 * work_floats(B * T, C, n_head, max_len, n_threads) floats; int8 matrices quantize their input over [0, qmax]
 * (255, or 127: quantize_input). Every argument comes in one StepArgs. */
void decode_step(const StepArgs *a) {
    const void *const *layers = a->layers;
    const float *wte = a->wte, *wpe = a->wpe, *ln_f_w = a->ln_f_w, *ln_f_b = a->ln_f_b, *head_scale = a->head_scale;
    const void *head = a->head;
    const int32_t *head_row_sum = a->head_row_sum;
    const int64_t *tokens = a->tokens, *positions = a->positions;
    const uint8_t *key_ok = a->key_ok;
    int n_layer = a->n_layer, B = a->B, T = a->T, C = a->C, n_head = a->n_head, vocab = a->vocab,
        max_len = a->max_len, pos = a->pos, qmax = a->qmax, format = a->format, inputs = a->activations,
        n_threads = a->n_threads;
    int N = B * T;  /* tokens this step: token i is row i / T's, at cache position pos + i % T */
    float *work = a->work, *logits = a->logits;
    int64_t max_pieces = pieces_for(max_len), pieces = pieces_for(pos + T);  /* as many as the last token's */
    float *x = work, *qkv = x + N * C, *mlp = qkv + 3 * N * C, *parts = mlp + 4 * N * C;  /* (work_floats) */
#pragma omp parallel num_threads(n_threads)
    {
        int lo, hi;
        float *h = work + shared_floats(N, C, n_head, max_len) + omp_get_thread_num() * thread_floats(N, C, n_head),
              *att = h + N * C, *scores = att + N * C;  /* this thread's own */
        uint8_t *xq = (uint8_t *)(scores + n_head * PIECE);
        share(N * C, &lo, &hi);  /* the residual stream: each token's embedding plus its position's */
        for (int i = lo; i < hi; i++)
            x[i] = wte[tokens[i / C] * C + i % C] + wpe[positions[i / C] * C + i % C];
#pragma omp barrier
        for (int l = 0; l < n_layer; l++) {
            const void *const *w = layers + l * PER_LAYER;
            float *cache = (float *)w[CACHE];
            Matrix attn = matrix(w + C_ATTN, format, inputs), attn_proj = matrix(w + ATTN_PROJ, format, inputs),
                   fc = matrix(w + C_FC, format, inputs), mlp_proj = matrix(w + MLP_PROJ, format, inputs);
            /* every thread normalizes the whole (small) input itself: no barrier between norm and matvec */
            layer_norm(x, w[LN_1], w[LN_1 + 1], h, N, C);
            share(3 * C, &lo, &hi);
            matvec(&attn, h, xq, qmax, N, C, lo, hi, qkv, 3 * C, STORE);
            for (int i = 0; i < N; i++)  /* this thread's keys and values into the cache */
                for (int o = lo > C ? lo : C; o < hi; o++)
                    cache[((int64_t)(i / T) * max_len + pos + i % T) * 2 * C + o - C] = qkv[i * 3 * C + o];
#pragma omp barrier
            share(N * pieces, &lo, &hi);
            for (int j = lo; j < hi; j++) {
                int i = j / pieces, c = j % pieces, end = pos + i % T + 1;  /* token i sees [0, end) */
                int t0 = c * PIECE, t1 = t0 + PIECE < end ? t0 + PIECE : end;
                if (t0 >= end) continue;  /* an earlier token of a prompt: fewer pieces */
                attend_piece(qkv + i * 3 * C, cache + (int64_t)(i / T) * max_len * 2 * C,
                             key_ok ? key_ok + (int64_t)i * max_len : 0, t0, t1, C, n_head, scores,
                             parts + (i * max_pieces + c) * piece_floats(C, n_head));
            }
#pragma omp barrier
            for (int i = 0; i < N; i++)  /* every thread the whole (small) output itself: no barrier */
                attend_combine(parts + i * max_pieces * piece_floats(C, n_head), pieces_for(pos + i % T + 1), C,
                               n_head, att + i * C);
            share(C, &lo, &hi);
            matvec(&attn_proj, att, xq, qmax, N, C, lo, hi, x, C, ADD);
#pragma omp barrier
            layer_norm(x, w[LN_2], w[LN_2 + 1], h, N, C);
            share(4 * C, &lo, &hi);
            matvec(&fc, h, xq, qmax, N, C, lo, hi, mlp, 4 * C, STORE);
            for (int i = 0; i < N; i++) gelu(mlp + i * 4 * C + lo, hi - lo);  /* this thread's outputs */
#pragma omp barrier
            share(C, &lo, &hi);
            matvec(&mlp_proj, mlp, xq, qmax, N, 4 * C, lo, hi, x, C, ADD);
#pragma omp barrier
        }
        for (int r = 0; r < B; r++)  /* only each row's last token goes on to the head */
            layer_norm(x + ((int64_t)r * T + T - 1) * C, ln_f_w, ln_f_b, h + r * C, 1, C);
        share(vocab, &lo, &hi);
        /* the head: the token table, or its copy in the matrices' format */
        Matrix out = {head, head_scale, head_row_sum, 0, format, inputs};
        matvec(&out, h, xq, qmax, B, C, lo, hi, logits, vocab, STORE);
    }
}

/* y (rows,) = W (rows, cols) @ x (cols,), float32, on n_threads threads: the step's own weight stream,
 * alone. minigpt.bench reads memory with it too, so the bandwidth it measures is one the step can reach
 * whatever kernels torch has (torch's portable kernels read more slowly). */
void matvec_f32(const float *W, int rows, int cols, const float *x, float *y, int n_threads) {
    Matrix m = {W, 0, 0, 0, F32, FLOAT32_INPUTS};
#pragma omp parallel num_threads(n_threads)
    {
        int lo, hi;
        share(rows, &lo, &hi);
        matvec(&m, x, 0, 255, 1, cols, lo, hi, y, rows, STORE);
    }
}

/* y (B, rows) = x (B, cols) @ W^T for W (rows, cols) stored in `format` (not INT8, which needs its scales and
 * rows' sums), its inputs as `activations` says, on n_threads threads, each with its own scratch for the
 * prepared input: one matrix of the step, alone, for tests that check its arithmetic against a reference */
void matvec_format(const void *W, int format, int activations, int rows, int cols, const float *x, int B, float *y,
                   int n_threads) {
    Matrix m = {W, 0, 0, 0, format, activations};
#pragma omp parallel num_threads(n_threads)
    {
        int lo, hi;
        uint8_t *xq = malloc((size_t)B * cols * sizeof(float));  /* what matvec prepares, as in the step */
        share(rows, &lo, &hi);
        if (xq) matvec(&m, x, xq, 255, B, cols, lo, hi, y, rows, STORE);
        free(xq);
    }
}
