/* Paged attention for decode and verify rows on CPU (float32, AVX2 + FMA), read straight from the KV blocks.
 *
 * Why: the torch reference gathers every row's keys/values into a contiguous buffer (index_select) and then runs
 * SDPA over it, so each step copies the whole live KV once and reads it twice. At a few query rows per sequence
 * the work is tiny next to that traffic. Here one task per (a sequence's new tokens, kv head) walks the block table
 * with an online softmax (the contract of attention_triton.py's CUDA kernel): every K/V vector is read once, in place.
 * Rows that share a cached instruction read the same blocks, which then come from the CPU caches.
 *
 * Long prompt chunks stay on the torch path (blocked SDPA reuses each K/V tile across many queries; per-token
 * streaming would not).
 *
 * Layout (all float32, contiguous in the last dim):
 *   q       (T, Hq, D) with strides q_st, q_sh          out (T, Hq, D) with strides o_st, o_sh
 *   k, v    (num_blocks * block_size, Hkv, D) contiguous; slot = block * block_size + offset
 *   block_tables (B, bt_stride) int32; token_seq (T,) int32; token_kv_len (T,) int32 (positions 0..len-1 seen)
 *   runs    (n, 2) int64: (first token, count) of each run of a sequence's new tokens to compute
 * Limits checked by the caller (cpu_attention.py): D % 8 == 0, D <= MAX_D, count * Hq / Hkv <= MAX_VEC.
 */
#include "cpu_simd.h"
#include <math.h>

#define MAX_D 256
#define MAX_VEC 16 /* query vectors per task: tokens of a run x query heads per kv head */
#define MAX_BLOCK 64

/* e^x for 8 floats: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n through the exponent bits.
 * Relative error ~2e-7 (float rounding); inputs below -87 give 0, as softmax needs for -inf scores. */
KERNEL static inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(88.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* The 8 horizontal sums of a[0..7], as one vector (lane i = sum of a[i]). */
KERNEL static inline __m256 hsum8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3); /* per 128-bit half: sums 0-3 | 4-7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* One task: `nq` consecutive new tokens t0.. of one sequence (a decode row, or a run of verify rows) and one kv head
 * g. Its query vectors are the grp query heads of g for each of those tokens (nq * grp <= MAX_VEC), so each K/V
 * vector read from the blocks serves all of them. Token r sees positions < kv_len0 + r (causal among the run). */
KERNEL static void one_task(const float *q, long q_st, long q_sh, const float *k, const float *v,
                            const int *table, long num_blocks, int block_size, int kv_len0, int nq, int hkv, int g,
                            int grp, int d, float scale, float *out, long o_st, long o_sh, long t0) {
    float qs[MAX_VEC][MAX_D] __attribute__((aligned(32)));
    float acc[MAX_VEC][MAX_D] __attribute__((aligned(32)));
    float s[MAX_VEC][MAX_BLOCK + 8] __attribute__((aligned(32)));
    float m[MAX_VEC], l[MAX_VEC];
    int lim[MAX_VEC];
    const int nv = nq * grp;
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int r = 0; r < nq; r++) {
        for (int h = 0; h < grp; h++) {
            const int e = r * grp + h;
            const float *qh = q + (t0 + r) * q_st + (long)(g * grp + h) * q_sh;
            for (int i = 0; i < d; i += 8) {
                _mm256_store_ps(qs[e] + i, _mm256_mul_ps(_mm256_loadu_ps(qh + i), vscale));
                _mm256_store_ps(acc[e] + i, _mm256_setzero_ps());
            }
            m[e] = -INFINITY;
            l[e] = 0.0f;
            lim[e] = kv_len0 + r;
        }
    }
    const int kv_len = kv_len0 + nq - 1; /* what the run's last token sees */
    const long row = (long)hkv * d;      /* floats per slot */
    for (int p0 = 0; p0 < kv_len; p0 += block_size) {
        const int cnt = kv_len - p0 < block_size ? kv_len - p0 : block_size;
        const long blk = table[p0 / block_size];
        if (blk < 0 || blk >= num_blocks) continue; /* never read outside the pool (the engine never asks to) */
        const long base = blk * block_size;
        /* scores of this block's positions for every query vector, 8 positions at a time (each q vector loaded
         * once for 8 K rows, the 8 sums reduced together); causally hidden positions get -inf */
        for (int i0 = 0; i0 < cnt; i0 += 8) {
            const int c8 = cnt - i0 < 8 ? cnt - i0 : 8;
            const float *kr[8];
            for (int i = 0; i < 8; i++) kr[i] = k + (base + i0 + (i < c8 ? i : 0)) * row + (long)g * d;
            for (int e = 0; e < nv; e++) {
                __m256 a[8];
                for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
                for (int j = 0; j < d; j += 8) {
                    const __m256 qv = _mm256_load_ps(qs[e] + j);
                    for (int i = 0; i < 8; i++) a[i] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[i] + j), a[i]);
                }
                _mm256_storeu_ps(s[e] + i0, hsum8(a));
                for (int i = 0; i < c8; i++)
                    if (p0 + i0 + i >= lim[e]) s[e][i0 + i] = -INFINITY;
            }
        }
        /* online softmax: new running max, rescale what was accumulated, probabilities of this block */
        for (int e = 0; e < nv; e++) {
            float mb = m[e];
            for (int i = 0; i < cnt; i++) mb = s[e][i] > mb ? s[e][i] : mb;
            if (mb == -INFINITY) { /* nothing visible yet (cannot happen: position 0 is seen by all) */
                for (int i = 0; i < cnt; i++) s[e][i] = 0.0f;
                continue;
            }
            for (int i = cnt; i < ((cnt + 7) & ~7); i++) s[e][i] = -INFINITY; /* pad to whole vectors */
            const __m256 vm = _mm256_set1_ps(mb);
            __m256 sum = _mm256_setzero_ps();
            for (int i = 0; i < cnt; i += 8) {
                __m256 pr = exp256(_mm256_sub_ps(_mm256_loadu_ps(s[e] + i), vm));
                _mm256_storeu_ps(s[e] + i, pr);
                sum = _mm256_add_ps(sum, pr);
            }
            const float corr = m[e] == -INFINITY ? 0.0f : expf(m[e] - mb);
            l[e] = l[e] * corr + hsum(sum);
            m[e] = mb;
            if (corr != 1.0f) {
                const __m256 vc = _mm256_set1_ps(corr);
                for (int j = 0; j < d; j += 8) _mm256_store_ps(acc[e] + j, _mm256_mul_ps(_mm256_load_ps(acc[e] + j), vc));
            }
        }
        /* acc += p * v: 64 columns of one query vector's accumulator stay in registers over the block's rows */
        for (int e = 0; e < nv; e++) {
            for (int j0 = 0; j0 < d; j0 += 64) {
                const int w = d - j0 < 64 ? (d - j0) / 8 : 8;
                __m256 o[8];
                for (int j = 0; j < w; j++) o[j] = _mm256_load_ps(acc[e] + j0 + 8 * j);
                for (int i = 0; i < cnt; i++) {
                    const __m256 pi = _mm256_set1_ps(s[e][i]);
                    const float *vr = v + (base + i) * row + (long)g * d + j0;
                    for (int j = 0; j < w; j++) o[j] = _mm256_fmadd_ps(pi, _mm256_loadu_ps(vr + 8 * j), o[j]);
                }
                for (int j = 0; j < w; j++) _mm256_store_ps(acc[e] + j0 + 8 * j, o[j]);
            }
        }
    }
    for (int r = 0; r < nq; r++) {
        for (int h = 0; h < grp; h++) {
            const int e = r * grp + h;
            float *oh = out + (t0 + r) * o_st + (long)(g * grp + h) * o_sh;
            const __m256 inv = _mm256_set1_ps(l[e] > 0.0f ? 1.0f / l[e] : 0.0f);
            for (int j = 0; j < d; j += 8) _mm256_storeu_ps(oh + j, _mm256_mul_ps(_mm256_load_ps(acc[e] + j), inv));
        }
    }
}

/* runs: (n, 2) int64 rows of (first token, token count); the tokens of a run are consecutive new tokens of one
 * sequence, count * (hq / hkv) <= MAX_VEC. */
void paged_attention_rows(const float *q, long q_st, long q_sh, const float *k, const float *v, long num_blocks,
                          const int *block_tables, long bt_stride, int block_size, const int *token_seq,
                          const int *token_kv_len, const long *runs, long n, int hq, int hkv, int d, float scale,
                          float *out, long o_st, long o_sh, int num_threads) {
    const int grp = hq / hkv;
    const long tasks = n * hkv;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        const long t0 = runs[2 * (task / hkv)], nq = runs[2 * (task / hkv) + 1];
        const int g = (int)(task % hkv);
        one_task(q, q_st, q_sh, k, v, block_tables + (long)token_seq[t0] * bt_stride, num_blocks, block_size,
                 token_kv_len[t0], (int)nq, hkv, g, grp, d, scale, out, o_st, o_sh, t0);
    }
}
