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
 *     inputs are quantized as torch's int8 kernel (fbgemm's dynamic linear) quantizes them;
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
#if defined(__AVX2__)
#include <immintrin.h>
#endif

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

/* lane by lane, a where mask (a vector comparison's result) is set, else b */
static inline vf pick(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

enum { STORE, ADD };  /* what a matvec does with each output r: y = r, or y += r */

static inline float hsum(vf v) {
    float s = 0.f;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
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

/* out[k * NB + j] = row k of W . row j of x, for R consecutive rows of W (each n_in long) and NB of x:
 * R * NB independent sums, so the loads of one need not wait for another's, and each weight loaded once
 * serves NB rows of the batch. Every sum runs in the same order whatever R and NB are, so a row's result
 * does not depend on the batch around it. */
static inline __attribute__((always_inline)) void dots_f32(const float *W, const float *x, int n_in, const int R,
                                                           const int NB, float *out) {
    vf acc[16];
    for (int a = 0; a < R * NB; a++) acc[a] = (vf){0};
    int i = 0;
    for (; i + VL <= n_in; i += VL)
        for (int j = 0; j < NB; j++) {
            vf xv = *(const vf *)(x + (int64_t)j * n_in + i);
            for (int k = 0; k < R; k++) acc[k * NB + j] += *(const vf *)(W + (int64_t)k * n_in + i) * xv;
        }
    for (int a = 0; a < R * NB; a++) out[a] = hsum(acc[a]);
    for (; i < n_in; i++)  /* the tail when n_in is not a multiple of VL */
        for (int k = 0; k < R; k++)
            for (int j = 0; j < NB; j++) out[k * NB + j] += W[(int64_t)k * n_in + i] * x[(int64_t)j * n_in + i];
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

/* as dots_f32, over int8 weights and the quantized rows: integer sums (`seven`: the rows are 7-bit) */
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

/* one weight matrix: (out, in) float32, or int8 with a float32 scale and the sum of its weights per row */
typedef struct {
    const void *w;
    const float *scale;  /* NULL: float32 weights */
    const int32_t *row_sum;
    const float *bias;  /* or NULL */
} Matrix;

/* d = R rows of m (from row o) . NB rows of the input (x, or its quantized xq with scale xs, zero zp), finished:
 * scaled and biased. Constant R and NB in each case, so the sums stay in registers. */
static void dots(const Matrix *m, int o, const float *x, const uint8_t *xq, float xs, int32_t zp, int qmax,
                 int n_in, int R, int NB, float *d) {
    int32_t n[16];
    const int8_t *q = (const int8_t *)m->w + (int64_t)o * n_in;
#define CASE(r, nb)                                                                                   \
    case r * 8 + nb:                                                                                  \
        if (m->scale && qmax <= 127) dots_i8(q, xq, n_in, r, nb, 1, n);                               \
        else if (m->scale) dots_i8(q, xq, n_in, r, nb, 0, n);                                         \
        else dots_f32((const float *)m->w + (int64_t)o * n_in, x, n_in, r, nb, d);                   \
        break;
    switch (R * 8 + NB) {
        CASE(16, 1) CASE(4, 1) CASE(4, 2) CASE(4, 3) CASE(4, 4) CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(1, 4)
    }
#undef CASE
    for (int k = 0; k < R; k++)
        for (int j = 0; j < NB; j++) {
            float *y = d + k * NB + j;
            if (m->scale) *y = (float)(n[k * NB + j] - zp * m->row_sum[o + k]) * xs * m->scale[o + k];
            if (m->bias) *y += m->bias[o + k];
        }
}

/* rows [lo, hi) of y (B, ldy) = x (B, n_in) @ W^T + bias, each output stored, GELU'd or added per `mode`;
 * an int8 matrix reads x quantized (quantize_input, into xq). Batch 1 streams 16 rows at once: that many
 * concurrent streams keep the memory busiest (the count was chosen by timing; docs/performance.md). A
 * larger batch streams 4 rows at once and uses each for up to 4 rows of the batch at a time, reading them
 * again from the L1 cache, never from memory, for the next 4. */
static void matvec(const Matrix *m, const float *x, uint8_t *xq, int qmax, int B, int n_in, int lo, int hi,
                   float *y, int ldy, int mode) {
    float d[16], xs = 0.f;
    int32_t zp = 0;
    int R = B == 1 ? 16 : 4;
    if (m->scale) quantize_input(x, B * n_in, qmax, xq, &xs, &zp);  /* each thread its own copy: no barrier */
    for (int o = lo, rows; o < hi; o += rows) {
        rows = hi - o >= R ? R : 1;
        for (int r0 = 0, nb; r0 < B; r0 += nb) {
            nb = B - r0 < 4 ? B - r0 : 4;
            dots(m, o, x + (int64_t)r0 * n_in, xq + (int64_t)r0 * n_in, xs, zp, qmax, n_in, rows, nb, d);
            for (int k = 0; k < rows; k++)
                for (int j = 0; j < nb; j++) put(y + (int64_t)(r0 + j) * ldy + o + k, d[k * nb + j], mode);
        }
    }
}

static Matrix matrix(const void *const *p) { return (Matrix){p[0], p[1], p[2], p[3]}; }

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

/* decode_step's scratch, in floats: x (B, C), qkv (B, 3C), mlp (B, 4C) and the attention pieces
 * (B, pieces_for(max_len), piece_floats), shared by the threads; then for each thread thread_floats: a
 * normalized input (B, C), an attention output (B, C), a piece's scores (n_head, PIECE) and an input
 * quantized (B, 4C) bytes */
static inline int64_t shared_floats(int B, int C, int n_head, int max_len) {
    return (int64_t)B * 8 * C + B * pieces_for(max_len) * piece_floats(C, n_head);
}
static inline int64_t thread_floats(int B, int C, int n_head) { return (int64_t)3 * B * C + n_head * PIECE; }

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

/* One step: tokens (B,) at positions (B,) are written to cache position `pos`, every row attends over
 * [0, pos] (key_ok (B, max_len): which positions hold real tokens, NULL for all), logits (B, vocab) out.
 * `layers` holds PER_LAYER pointers per layer, `head` (vocab, C) float32, or int8 with `head_scale` and
 * `head_row_sum`; `work` holds work_floats(B, C, n_head, max_len, n_threads) floats; int8 matrices quantize
 * their input over [0, qmax] (255, or 127: quantize_input). Every argument comes in one StepArgs. */
void decode_step(const StepArgs *a) {
    const void *const *layers = a->layers;
    const float *wte = a->wte, *wpe = a->wpe, *ln_f_w = a->ln_f_w, *ln_f_b = a->ln_f_b, *head_scale = a->head_scale;
    const void *head = a->head;
    const int32_t *head_row_sum = a->head_row_sum;
    const int64_t *tokens = a->tokens, *positions = a->positions;
    const uint8_t *key_ok = a->key_ok;
    int n_layer = a->n_layer, B = a->B, C = a->C, n_head = a->n_head, vocab = a->vocab, max_len = a->max_len,
        pos = a->pos, qmax = a->qmax, n_threads = a->n_threads;
    float *work = a->work, *logits = a->logits;
    int64_t max_pieces = pieces_for(max_len), pieces = pieces_for(pos + 1);
    float *x = work, *qkv = x + B * C, *mlp = qkv + 3 * B * C, *parts = mlp + 4 * B * C;  /* (work_floats) */
#pragma omp parallel num_threads(n_threads)
    {
        int lo, hi;
        float *h = work + shared_floats(B, C, n_head, max_len) + omp_get_thread_num() * thread_floats(B, C, n_head),
              *att = h + B * C, *scores = att + B * C;  /* this thread's own */
        uint8_t *xq = (uint8_t *)(scores + n_head * PIECE);
        share(B * C, &lo, &hi);  /* the residual stream: each token's embedding plus its position's */
        for (int i = lo; i < hi; i++)
            x[i] = wte[tokens[i / C] * C + i % C] + wpe[positions[i / C] * C + i % C];
#pragma omp barrier
        for (int l = 0; l < n_layer; l++) {
            const void *const *w = layers + l * PER_LAYER;
            float *cache = (float *)w[CACHE];
            Matrix attn = matrix(w + C_ATTN), attn_proj = matrix(w + ATTN_PROJ), fc = matrix(w + C_FC),
                   mlp_proj = matrix(w + MLP_PROJ);
            /* every thread normalizes the whole (small) input itself: no barrier between norm and matvec */
            layer_norm(x, w[LN_1], w[LN_1 + 1], h, B, C);
            share(3 * C, &lo, &hi);
            matvec(&attn, h, xq, qmax, B, C, lo, hi, qkv, 3 * C, STORE);
            for (int r = 0; r < B; r++)  /* this thread's keys and values into the cache at `pos` */
                for (int o = lo > C ? lo : C; o < hi; o++)
                    cache[((int64_t)r * max_len + pos) * 2 * C + o - C] = qkv[r * 3 * C + o];
#pragma omp barrier
            share(B * pieces, &lo, &hi);
            for (int j = lo; j < hi; j++) {
                int r = j / pieces, c = j % pieces, t0 = c * PIECE, t1 = t0 + PIECE < pos + 1 ? t0 + PIECE : pos + 1;
                attend_piece(qkv + r * 3 * C, cache + (int64_t)r * max_len * 2 * C,
                             key_ok ? key_ok + (int64_t)r * max_len : 0, t0, t1, C, n_head, scores,
                             parts + (r * max_pieces + c) * piece_floats(C, n_head));
            }
#pragma omp barrier
            for (int r = 0; r < B; r++)  /* every thread the whole (small) output itself: no barrier */
                attend_combine(parts + r * max_pieces * piece_floats(C, n_head), pieces, C, n_head, att + r * C);
            share(C, &lo, &hi);
            matvec(&attn_proj, att, xq, qmax, B, C, lo, hi, x, C, ADD);
#pragma omp barrier
            layer_norm(x, w[LN_2], w[LN_2 + 1], h, B, C);
            share(4 * C, &lo, &hi);
            matvec(&fc, h, xq, qmax, B, C, lo, hi, mlp, 4 * C, STORE);
            for (int r = 0; r < B; r++) gelu(mlp + r * 4 * C + lo, hi - lo);  /* this thread's outputs */
#pragma omp barrier
            share(C, &lo, &hi);
            matvec(&mlp_proj, mlp, xq, qmax, B, 4 * C, lo, hi, x, C, ADD);
#pragma omp barrier
        }
        layer_norm(x, ln_f_w, ln_f_b, h, B, C);
        share(vocab, &lo, &hi);
        Matrix out = {head, head_scale, head_row_sum, 0};  /* the head: the token table, or its int8 copy */
        matvec(&out, h, xq, qmax, B, C, lo, hi, logits, vocab, STORE);
    }
}

/* y (rows,) = W (rows, cols) @ x (cols,), float32, on n_threads threads: the step's own weight stream,
 * alone. minigpt.bench reads memory with it too, so the bandwidth it measures is one the step can reach
 * whatever kernels torch has (torch's portable kernels read more slowly). */
void matvec_f32(const float *W, int rows, int cols, const float *x, float *y, int n_threads) {
    Matrix m = {W, 0, 0, 0};
#pragma omp parallel num_threads(n_threads)
    {
        int lo, hi;
        share(rows, &lo, &hi);
        matvec(&m, x, 0, 255, 1, cols, lo, hi, y, rows, STORE);
    }
}
