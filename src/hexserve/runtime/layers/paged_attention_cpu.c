/* Decode attention straight from the paged KV cache, on the CPU, for float32 and bfloat16 caches.
 *
 * One query token per sequence. Each (sequence, KV head) pair is one task: the query heads that share the
 * KV head score every cached key of the sequence (read in place through its block table, never gathered
 * into a padded copy), take a softmax, and sum the values; keys and values are each read once, and all
 * arithmetic is in float32. Built and loaded by paged_attention_cpu.py (cc -O3 -march=native -fopenmp;
 * the OpenMP runtime is the libgomp torch already loaded, so the kernel shares torch's threads).
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

INLINE float sum(vec x) {
    float s = 0.f;
    for (int i = 0; i < LANES; i++) s += x[i];
    return s;
}

/* e^x for x <= 0, vectorizable (libm's expf is a scalar call): e^x = 2^k * e^r with r = x - k ln 2 in
 * [-ln2/2, ln2/2], e^r by its degree-6 Taylor polynomial (relative error < 2e-7, float32's rounding), 2^k
 * written straight into the exponent bits. Below -87 (e^-87 ~ 1.6e-38) the argument is clamped. */
INLINE float exp_nonpositive(float x) {
    x = x < -87.f ? -87.f : x;
    const float k = __builtin_roundf(x * 1.44269504f);
    const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;  // ln 2 split in two for exact k * ln 2
    float e = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720))))));
    const uint32_t scale_bits = (uint32_t)((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &scale_bits, sizeof two_k);
    return e * two_k;
}

/* One task: query heads [h0 * group, h1 * group) of one row against KV heads [h0, h1). Reading several KV
 * heads of a token together reads its whole cache row (kv_heads * d contiguous values), which streams from
 * memory far better than one head's slice of every row. */
INLINE int attend_row(const void *q, const void *k_cache, const void *v_cache, const int64_t *table, int64_t len,
                      void *out, int64_t row, int64_t h0, int64_t h1, int64_t heads, int64_t kv_heads,
                      const int64_t d, int64_t block_size, float scale, const int bf16) {
    const int64_t group = heads / kv_heads, chunks = d / LANES, rows = (h1 - h0) * group;
    const int64_t first = (row * heads + h0 * group) * d;
    // The scaled queries and the output rows (rows x chunks vectors each), then every key's score.
    vec *scratch = aligned_alloc(sizeof(vec), sizeof(vec) * (2 * rows * chunks + rows * len / LANES + rows));
    if (!scratch) return -1;
    vec *query = scratch, *acc = scratch + rows * chunks;
    float *scores = (float *)(acc + rows * chunks), norms[rows];
    for (int64_t c = 0; c < rows * chunks; c++) {
        query[c] = load(q, first + c * LANES, bf16) * scale;
        acc[c] = (vec){0};
    }
    for (int64_t t = 0; t < len; t++) {
        const int64_t slot = table[t / block_size] * block_size + t % block_size;
        for (int64_t r = 0; r < rows; r++) {
            const int64_t key = (slot * kv_heads + h0 + r / group) * d;
            vec s = {0};
            for (int64_t c = 0; c < chunks; c++) s += query[r * chunks + c] * load(k_cache, key + c * LANES, bf16);
            scores[r * len + t] = sum(s);
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        float *p = scores + r * len, top = -INFINITY, total = 0.f;
        for (int64_t t = 0; t < len; t++) top = p[t] > top ? p[t] : top;
#pragma omp simd reduction(+ : total)
        for (int64_t t = 0; t < len; t++) total += (p[t] = exp_nonpositive(p[t] - top));
        norms[r] = 1.f / total;
    }
    for (int64_t t = 0; t < len; t++) {
        const int64_t slot = table[t / block_size] * block_size + t % block_size;
        for (int64_t kv = h0; kv < h1; kv++)
            for (int64_t c = 0; c < chunks; c++) {
                const vec v = load(v_cache, (slot * kv_heads + kv) * d + c * LANES, bf16);
                for (int64_t r = (kv - h0) * group; r < (kv - h0 + 1) * group; r++)
                    acc[r * chunks + c] += scores[r * len + t] * v;
            }
    }
    for (int64_t c = 0; c < rows * chunks; c++) store(out, first + c * LANES, acc[c] * norms[c / chunks], bf16);
    free(scratch);
    return 0;
}

/* q, out: (n, heads, d). k_cache, v_cache: (slots, kv_heads, d). blocks: (n, width) block ids; row i uses
 * the first ceil(lengths[i] / block_size) of them. d is a multiple of 16. Returns 0, or -1 when scratch
 * memory ran out. A task is a whole row when there are enough rows to keep every thread busy, else one KV
 * head of a row. */
INLINE int attend(const void *q, const void *k_cache, const void *v_cache, const int64_t *blocks,
                  const int64_t *lengths, void *out, int64_t n, int64_t width, int64_t heads, int64_t kv_heads,
                  const int64_t d, int64_t block_size, float scale, int threads, const int bf16) {
    const int64_t per_task = n >= 4 * threads ? kv_heads : 1, tasks = n * kv_heads / per_task;
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t task = 0; task < tasks; task++) {
        const int64_t row = task * per_task / kv_heads, h0 = task * per_task % kv_heads;
        failed |= attend_row(q, k_cache, v_cache, blocks + row * width, lengths[row], out, row, h0, h0 + per_task,
                             heads, kv_heads, d, block_size, scale, bf16);
    }
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
