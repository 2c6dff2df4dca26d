/* One GPT-2 decode step in C: every layer of one new token per row, in one call, on the threads torch uses.
 *
 * Why this exists (chapter 12): a batch-1 decode step reads ~0.5 GB of weights and does little else, so
 * its speed is set by memory bandwidth. In torch the matmuls run at that speed, but the ~300 small ops
 * between them (layer norms, GELU, attention, residual adds) each pay a dispatcher's and Python's toll,
 * and pay it cold: every matmul streams megabytes through the caches and evicts the code and data the
 * next op needs. Here a whole step is one function: one parallel region, a few barriers per layer, and
 * nothing between the weight streams but a few kilobytes of arithmetic.
 *
 * It computes exactly what minigpt.fast.FastDecoder._forward computes for T = 1 (tests check the logits
 * and the greedy tokens), reading the decoder's own tensors in place:
 *   - matrices are nn.Linear's (out, in), row-major: output o is the dot product of row o with the input,
 *     so each thread streams a contiguous block of rows;
 *   - each layer's cache is (max_batch, max_len, 2C): per position its key, then its value.
 * Every output is computed by one thread in a fixed order, so the numbers do not depend on how many
 * threads run. The vector width is the widest the build was told the CPU has (minigpt/native.py asks
 * torch which instructions this CPU runs and passes the matching compiler flags).
 */
#include <math.h>
#include <stdint.h>
#include <omp.h>

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
/* VL floats in one register; aligned(4) lets a load start at any float */
typedef float vf __attribute__((vector_size(VL * sizeof(float)), aligned(4)));

enum { LN_1, LN_1B, ATTN, ATTN_B, ATTN_PROJ, ATTN_PROJ_B, LN_2, LN_2B, FC, FC_B, MLP_PROJ, MLP_PROJ_B, CACHE,
       PER_LAYER };  /* the order of each layer's pointers in `layers` */
enum { STORE, STORE_GELU, ADD };  /* what a matvec does with each output: y = r, y = gelu(r), y += r */

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

static inline float gelu_tanh(float x) {
    return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

static inline void put(float *y, float r, int mode) {
    if (mode == ADD) *y += r;
    else *y = mode == STORE_GELU ? gelu_tanh(r) : r;
}

/* out[k * NB + j] = row k of W . row j of x, for R consecutive rows of W (each n_in long) and NB of x:
 * R * NB independent sums, so the loads of one need not wait for another's, and each weight loaded once
 * serves NB rows of the batch. Every sum runs in the same order whatever R and NB are, so a row's result
 * does not depend on the batch around it. */
static inline __attribute__((always_inline)) void dots(const float *W, const float *x, int n_in, const int R,
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

/* rows [lo, hi) of y (B, ldy) = x (B, n_in) @ W^T + bias, each output stored, GELU'd or added per `mode`.
 * Batch 1 streams 16 rows at once (16 streams kept memory busiest; 4, 8, 12, 24 and 32 were measured);
 * a larger batch streams 4 rows at once and uses each for up to 4 rows of the batch at a time, reading
 * them again from the L1 cache, never from memory, for the next 4. */
static void matvec(const float *W, const float *bias, const float *x, int B, int n_in, int lo, int hi,
                   float *y, int ldy, int mode) {
    float d[16];
    int R = B == 1 ? 16 : 4;
    for (int o = lo, rows; o < hi; o += rows) {
        rows = hi - o >= R ? R : 1;
        const float *w = W + (int64_t)o * n_in;
        for (int r0 = 0, nb; r0 < B; r0 += nb) {
            nb = B - r0 < 4 ? B - r0 : 4;
            const float *xr = x + (int64_t)r0 * n_in;
            switch (rows * 8 + nb) {  /* constant R and NB, so each case keeps its sums in registers */
            case 16 * 8 + 1: dots(w, xr, n_in, 16, 1, d); break;
            case 4 * 8 + 1: dots(w, xr, n_in, 4, 1, d); break;
            case 4 * 8 + 2: dots(w, xr, n_in, 4, 2, d); break;
            case 4 * 8 + 3: dots(w, xr, n_in, 4, 3, d); break;
            case 4 * 8 + 4: dots(w, xr, n_in, 4, 4, d); break;
            case 1 * 8 + 1: dots(w, xr, n_in, 1, 1, d); break;
            case 1 * 8 + 2: dots(w, xr, n_in, 1, 2, d); break;
            case 1 * 8 + 3: dots(w, xr, n_in, 1, 3, d); break;
            default: dots(w, xr, n_in, 1, 4, d);
            }
            for (int k = 0; k < rows; k++)
                for (int j = 0; j < nb; j++)
                    put(y + (int64_t)(r0 + j) * ldy + o + k, d[k * nb + j] + (bias ? bias[o + k] : 0.f), mode);
        }
    }
}

/* this thread's share [lo, hi) of n outputs */
static inline void share(int n, int *lo, int *hi) {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    *lo = (int)((int64_t)n * t / nt), *hi = (int)((int64_t)n * (t + 1) / nt);
}

/* attention of one query (head h of row r) over cache positions [0, kv_len), the masked ones left out */
static void attend(const float *q, const float *cache, const uint8_t *key_ok, int kv_len, int C, int hs,
                   float *scores, float *y) {
    float scale = 1.f / sqrtf((float)hs), top = -INFINITY, total = 0.f;
    for (int t = 0; t < kv_len; t++) {
        const float *k = cache + (int64_t)t * 2 * C;
        float s = 0.f;
        for (int i = 0; i < hs; i++) s += q[i] * k[i];
        scores[t] = key_ok && !key_ok[t] ? -INFINITY : s * scale;
        top = scores[t] > top ? scores[t] : top;
    }
    for (int i = 0; i < hs; i++) y[i] = 0.f;
    for (int t = 0; t < kv_len; t++) {
        float p = expf(scores[t] - top);  /* exp(-inf) = 0: a masked position adds nothing */
        const float *v = cache + (int64_t)t * 2 * C + C;
        for (int i = 0; i < hs; i++) y[i] += p * v[i];
        total += p;
    }
    for (int i = 0; i < hs; i++) y[i] /= total;
}

/* One step: tokens (B,) at positions (B,) are written to cache position `pos`, every row attends over
 * [0, pos] (key_ok (B, max_len): which positions hold real tokens, NULL for all), logits (B, vocab) out.
 * `layers` holds PER_LAYER pointers per layer; `work` holds B * 9C floats shared by the threads, then
 * B * C + max_len floats per thread. */
void decode_step(const float *const *layers, int n_layer, const float *wte, const float *wpe,
                 const float *ln_f_w, const float *ln_f_b, const int64_t *tokens, const int64_t *positions,
                 const uint8_t *key_ok, int B, int C, int n_head, int vocab, int max_len, int pos,
                 float *work, float *logits, int n_threads) {
    float *x = work, *qkv = x + B * C, *att = qkv + 3 * B * C, *mlp = att + B * C;  /* (B,C) (B,3C) (B,C) (B,4C) */
    int hs = C / n_head;
#pragma omp parallel num_threads(n_threads)
    {
        int lo, hi;
        float *h = work + 9 * B * C + omp_get_thread_num() * (B * C + max_len), *scores = h + B * C;
        share(B * C, &lo, &hi);  /* the residual stream: each token's embedding plus its position's */
        for (int i = lo; i < hi; i++)
            x[i] = wte[tokens[i / C] * C + i % C] + wpe[positions[i / C] * C + i % C];
#pragma omp barrier
        for (int l = 0; l < n_layer; l++) {
            const float *const *w = layers + l * PER_LAYER;
            float *cache = (float *)w[CACHE];
            /* every thread normalizes the whole (small) input itself: no barrier between norm and matvec */
            layer_norm(x, w[LN_1], w[LN_1B], h, B, C);
            share(3 * C, &lo, &hi);
            matvec(w[ATTN], w[ATTN_B], h, B, C, lo, hi, qkv, 3 * C, STORE);
            for (int r = 0; r < B; r++)  /* this thread's keys and values into the cache at `pos` */
                for (int o = lo > C ? lo : C; o < hi; o++)
                    cache[((int64_t)r * max_len + pos) * 2 * C + o - C] = qkv[r * 3 * C + o];
#pragma omp barrier
            share(B * n_head, &lo, &hi);
            for (int j = lo; j < hi; j++) {
                int r = j / n_head, hd = j % n_head;
                attend(qkv + r * 3 * C + hd * hs, cache + (int64_t)r * max_len * 2 * C + hd * hs,
                       key_ok ? key_ok + (int64_t)r * max_len : 0, pos + 1, C, hs, scores, att + r * C + hd * hs);
            }
#pragma omp barrier
            share(C, &lo, &hi);
            matvec(w[ATTN_PROJ], w[ATTN_PROJ_B], att, B, C, lo, hi, x, C, ADD);
#pragma omp barrier
            layer_norm(x, w[LN_2], w[LN_2B], h, B, C);
            share(4 * C, &lo, &hi);
            matvec(w[FC], w[FC_B], h, B, C, lo, hi, mlp, 4 * C, STORE_GELU);
#pragma omp barrier
            share(C, &lo, &hi);
            matvec(w[MLP_PROJ], w[MLP_PROJ_B], mlp, B, 4 * C, lo, hi, x, C, ADD);
#pragma omp barrier
        }
        layer_norm(x, ln_f_w, ln_f_b, h, B, C);
        share(vocab, &lo, &hi);
        matvec(wte, 0, h, B, C, lo, hi, logits, vocab, STORE);  /* the head: tied to the token table */
    }
}
