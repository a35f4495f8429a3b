/* Decode attention straight from the paged KV cache, on the CPU, for float32 and bfloat16 caches.
 *
 * One query token per sequence, attending to every cached key of its sequence, read in place through its
 * block table (never gathered into a padded copy). Work is split into spans of a row's tokens (several per
 * row when rows are few, so that every thread has work even at batch 1); a span covers all KV heads, so it
 * reads whole cache rows (kv_heads * d contiguous values per token), block after block (explicitly
 * prefetching the next block measured slower). Each span keeps a running softmax (flash-decoding): its
 * maximum score, sum of exponentials and unnormalised output per query head; a second pass merges a row's
 * spans. All arithmetic is float32.
 * Built and loaded by paged_attention_cpu.py (cc -O3 -march=native -fopenmp; the OpenMP runtime is the
 * libgomp torch already loaded, so the kernel shares torch's threads).
 *
 * Head vectors are handled 16 floats at a time with GCC vector extensions (one AVX-512 register, or two
 * AVX2 ones): the compiler's own vectorizer produced loops several times slower for these short rows.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define LANES 16

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));
typedef uint32_t vec_u32 __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint16_t vec_u16 __attribute__((vector_size(LANES * sizeof(uint16_t))));

/* 16 consecutive elements of a float32 or bfloat16 array as floats (`bf16` is a constant at every call, so
 * each entry point below compiles to its own branch-free code). */
INLINE vec load(const void *p, int64_t i, const int bf16) {
    vec x;
    if (!bf16) {
        memcpy(&x, (const float *)p + i, sizeof x);
        return x;
    }
    vec_u16 half;
    memcpy(&half, (const uint16_t *)p + i, sizeof half);
    vec_u32 bits = __builtin_convertvector(half, vec_u32) << 16;
    memcpy(&x, &bits, sizeof x);
    return x;
}

INLINE void store(void *p, int64_t i, vec x, const int bf16) {
    if (!bf16) {
        memcpy((float *)p + i, &x, sizeof x);
        return;
    }
    vec_u32 bits;  // round to nearest even, as torch does
    memcpy(&bits, &x, sizeof bits);
    vec_u16 half = __builtin_convertvector((bits + 0x7fff + ((bits >> 16) & 1)) >> 16, vec_u16);
    memcpy((uint16_t *)p + i, &half, sizeof half);
}

/* Lane i of the result is the sum of the lanes of x[i]: sixteen dot products finished in 45 vector operations
 * (a transpose folded into the additions) instead of sixteen horizontal sums. */
INLINE vec sum_each(const vec x[LANES]) {
    vec halves[8], quarters[4], eighths[2];
    for (int i = 0; i < 8; i++)
        halves[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                                            22, 23) +
                    __builtin_shufflevector(x[2 * i], x[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                            29, 30, 31);
    for (int i = 0; i < 4; i++)
        quarters[i] = __builtin_shufflevector(halves[2 * i], halves[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18,
                                              19, 24, 25, 26, 27) +
                      __builtin_shufflevector(halves[2 * i], halves[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22,
                                              23, 28, 29, 30, 31);
    for (int i = 0; i < 2; i++)
        eighths[i] = __builtin_shufflevector(quarters[2 * i], quarters[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17,
                                             20, 21, 24, 25, 28, 29) +
                     __builtin_shufflevector(quarters[2 * i], quarters[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19,
                                             22, 23, 26, 27, 30, 31);
    return __builtin_shufflevector(eighths[0], eighths[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           __builtin_shufflevector(eighths[0], eighths[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* e^x for x <= 0, vectorizable (libm's expf is a scalar call): e^x = 2^k * e^r with r = x - k ln 2 in
 * [-ln2/2, ln2/2], e^r by its degree-6 Taylor polynomial (relative error < 2e-7, float32's rounding), 2^k
 * written straight into the exponent bits. Below -87 (e^-87 ~ 1.6e-38) the argument is clamped. */
INLINE float exp_nonpositive(float x) {
    x = x < -87.f ? -87.f : x;
    const float k = (x * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest: 1.5 * 2^23 drops the fraction
    const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;  // ln 2 split in two for exact k * ln 2
    float e = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720))))));
    const uint32_t scale_bits = (uint32_t)((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &scale_bits, sizeof two_k);
    return e * two_k;
}

/* Tokens [t0, t1) of one row against all its query heads: for each query head r, its largest score
 * best[r], the sum of e^(score - best[r]) total[r], and the unnormalised output acc[r * chunks ...]. */
INLINE void attend_span(const vec *query, const void *k_cache, const void *v_cache, const int64_t *table,
                        int64_t t0, int64_t t1, int64_t heads, int64_t kv_heads, const int64_t d, int64_t block_size,
                        float *best, float *total, vec *acc, const int bf16) {
    const int64_t group = heads / kv_heads, chunks = d / LANES, row_values = kv_heads * d;
    for (int64_t r = 0; r < heads; r++) best[r] = -INFINITY, total[r] = 0.f;
    for (int64_t c = 0; c < heads * chunks; c++) acc[c] = (vec){0};
    for (int64_t t = t0; t < t1;) {
        // A tile: up to 16 tokens of one block, so that one head's scores fill one vector.
        const int64_t block = t / block_size, block_end = (block + 1) * block_size;
        const int64_t stop = t1 < block_end ? t1 : block_end;
        const int64_t count = stop - t < LANES ? stop - t : LANES;
        const int64_t first_slot = table[block] * block_size + t % block_size;
        vec scores[heads];  // lane i: token t + i
        for (int64_t r = 0; r < heads; r++) {
            const vec *qr = query + r * chunks;
            vec dots[LANES];
            for (int64_t i = 0; i < LANES; i++) {
                dots[i] = (vec){0};
                if (i < count)
                    for (int64_t c = 0; c < chunks; c++)
                        dots[i] += qr[c] * load(k_cache, (first_slot + i) * row_values + (r / group) * d + c * LANES, bf16);
            }
            scores[r] = sum_each(dots);
        }
        for (int64_t r = 0; r < heads; r++) {  // running softmax: rescale what came before to the new maximum
            float top = best[r];
            for (int64_t i = 0; i < count; i++) top = scores[r][i] > top ? scores[r][i] : top;
            const float rescale = exp_nonpositive(best[r] - top);
            vec p;
            float tile_total = 0.f;
            for (int64_t i = 0; i < LANES; i++) p[i] = i < count ? exp_nonpositive(scores[r][i] - top) : 0.f;
            for (int64_t i = 0; i < LANES; i++) tile_total += p[i];
            best[r] = top, total[r] = total[r] * rescale + tile_total, scores[r] = p;
            for (int64_t c = 0; c < chunks; c++) acc[r * chunks + c] *= rescale;
        }
        for (int64_t r = 0; r < heads; r++)
            for (int64_t c = 0; c < chunks; c++) {
                vec a = acc[r * chunks + c];
                for (int64_t i = 0; i < count; i++)
                    a += scores[r][i] * load(v_cache, (first_slot + i) * row_values + (r / group) * d + c * LANES, bf16);
                acc[r * chunks + c] = a;
            }
        t += count;
    }
}

/* q, out: (n, heads, d). k_cache, v_cache: (slots, kv_heads, d). blocks: (n, width) block ids; row i uses
 * the first ceil(lengths[i] / block_size) of them. d is a multiple of 16. Returns 0, or -1 when scratch
 * memory ran out. */
INLINE int attend(const void *q, const void *k_cache, const void *v_cache, const int64_t *blocks,
                  const int64_t *lengths, void *out, int64_t n, int64_t width, int64_t heads, int64_t kv_heads,
                  const int64_t d, int64_t block_size, float scale, int threads, const int bf16) {
    const int64_t chunks = d / LANES;
    // Spans of at most `span` tokens: about four per thread over the whole batch, and at least 128 tokens.
    int64_t all_tokens = 0;
    for (int64_t row = 0; row < n; row++) all_tokens += lengths[row];
    int64_t span = (all_tokens + 4 * threads - 1) / (4 * threads);
    span = span < 128 ? 128 : (span + LANES - 1) / LANES * LANES;
    int64_t *first_span = malloc(sizeof(int64_t) * (n + 1));
    if (!first_span) return -1;
    first_span[0] = 0;
    for (int64_t row = 0; row < n; row++) first_span[row + 1] = first_span[row] + (lengths[row] + span - 1) / span;
    const int64_t spans = first_span[n];
    // Per span and query head: the unnormalised output (chunks vectors), then its maximum and its total.
    vec *partial = aligned_alloc(sizeof(vec), sizeof(vec) * spans * heads * chunks);
    float *best = malloc(sizeof(float) * spans * heads), *total = malloc(sizeof(float) * spans * heads);
    int failed = !partial || !best || !total;
    if (!failed) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t item = 0; item < spans; item++) {
            int64_t row = 0;
            while (first_span[row + 1] <= item) row++;
            const int64_t t0 = (item - first_span[row]) * span;
            const int64_t t1 = t0 + span < lengths[row] ? t0 + span : lengths[row];
            vec query[heads * chunks];
            for (int64_t c = 0; c < heads * chunks; c++) query[c] = load(q, row * heads * d + c * LANES, bf16) * scale;
            attend_span(query, k_cache, v_cache, blocks + row * width, t0, t1, heads, kv_heads, d, block_size,
                        best + item * heads, total + item * heads, partial + item * heads * chunks, bf16);
        }
#pragma omp parallel for num_threads(threads)
        for (int64_t task = 0; task < n * heads; task++) {  // merge each row's spans, head by head
            const int64_t row = task / heads, r = task % heads;
            float top = -INFINITY, sum_total = 0.f;
            for (int64_t item = first_span[row]; item < first_span[row + 1]; item++)
                top = best[item * heads + r] > top ? best[item * heads + r] : top;
            vec merged[chunks];
            for (int64_t c = 0; c < chunks; c++) merged[c] = (vec){0};
            for (int64_t item = first_span[row]; item < first_span[row + 1]; item++) {
                const float weight = exp_nonpositive(best[item * heads + r] - top);
                sum_total += total[item * heads + r] * weight;
                for (int64_t c = 0; c < chunks; c++) merged[c] += partial[(item * heads + r) * chunks + c] * weight;
            }
            for (int64_t c = 0; c < chunks; c++)
                store(out, (row * heads + r) * d + c * LANES, merged[c] * (1.f / sum_total), bf16);
        }
    }
    free(first_span), free(partial), free(best), free(total);
    return failed ? -1 : 0;
}

/* Head sizes known at compile time unroll the inner loops fully (64 and 128 cover Llama, Qwen2, OPT). */
#define ENTRY(NAME, BF16)                                                                                      \
    int NAME(const void *q, const void *k_cache, const void *v_cache, const int64_t *blocks,                  \
             const int64_t *lengths, void *out, int64_t n, int64_t width, int64_t heads, int64_t kv_heads,     \
             int64_t d, int64_t block_size, float scale, int threads) {                                        \
        if (d == 64)                                                                                           \
            return attend(q, k_cache, v_cache, blocks, lengths, out, n, width, heads, kv_heads, 64,            \
                          block_size, scale, threads, BF16);                                                   \
        if (d == 128)                                                                                          \
            return attend(q, k_cache, v_cache, blocks, lengths, out, n, width, heads, kv_heads, 128,           \
                          block_size, scale, threads, BF16);                                                   \
        return attend(q, k_cache, v_cache, blocks, lengths, out, n, width, heads, kv_heads, d, block_size,     \
                      scale, threads, BF16);                                                                   \
    }

ENTRY(paged_decode_attention_f32, 0)
ENTRY(paged_decode_attention_bf16, 1)
