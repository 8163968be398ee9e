/* y = x @ w.T for a few rows of x (decode and verify steps), float32, on AVX2 + FMA CPUs.
 *
 * Why: a decode step multiplies 1-32 activation rows by every weight matrix. BLAS libraries tune for big square
 * products; at a few rows MKL either runs on one thread or re-packs the weights, and reaches 5-10 GB/s of weight
 * streaming where the memory gives ~19. Here each weight row is read once from memory and multiplied with all of
 * x's rows while it sits in registers/L1; the output columns are split over the OpenMP threads (the same libgomp
 * runtime torch uses, so no second thread pool competes for the cores).
 *
 * Layout: x (M, K) row-major, w (N, K) row-major (nn.Linear's weight), y (M, N) row-major, K % 8 == 0 (checked by
 * the caller, structgen/kernels/cpu_gemm.py, which falls back to torch otherwise).
 *
 * Register blocking: a 4x3 tile (4 rows of x by 3 rows of w: 12 accumulators + 3 weight vectors + 1 x vector = the
 * 16 ymm registers) for full groups of 4 rows, and Rx4 tiles (R = 1..3) for the rest; both walk 12 weight rows at a
 * time so that the remainder rows reuse the weights while they are still in L1/L2.
 */
#include "cpu_simd.h"


/* Safe on any x86-64 CPU: the caller checks it before calling anything built for AVX2. */
int skinny_gemm_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* One MR x NR tile: y[i, j] = dot(x row i, w row j) over all K. Constant trip counts: GCC unrolls the i/j loops
 * and keeps acc[][] in registers. */
#define TILE(MR, NR)                                                                                              \
    KERNEL static inline void tile_##MR##x##NR(const float *x, long K, const float *w, float *y, long N) {          \
        __m256 acc[MR][NR];                                                                                       \
        for (int i = 0; i < MR; i++)                                                                              \
            for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();                                         \
        for (long k = 0; k < K; k += 8) {                                                                         \
            __m256 v[NR];                                                                                         \
            for (int j = 0; j < NR; j++) v[j] = _mm256_loadu_ps(w + j * K + k);                                   \
            for (int i = 0; i < MR; i++) {                                                                        \
                __m256 u = _mm256_loadu_ps(x + i * K + k);                                                        \
                for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(u, v[j], acc[i][j]);                      \
            }                                                                                                     \
        }                                                                                                         \
        for (int i = 0; i < MR; i++)                                                                              \
            for (int j = 0; j < NR; j++) y[i * N + j] = hsum(acc[i][j]);                                          \
    }

TILE(4, 3)
TILE(3, 4)
TILE(2, 4)
TILE(1, 4)
TILE(1, 1)

#define PANEL 12 /* weight rows per panel: a multiple of both tile widths (3 and 4) */

/* Output columns [n0, n1) for all M rows. */
KERNEL static void columns(const float *x, long M, long K, const float *w, long n0, long n1, float *y, long N) {
    long n = n0;
    for (; n + PANEL <= n1; n += PANEL) {
        long m = 0;
        for (; m + 4 <= M; m += 4)
            for (long j = 0; j < PANEL; j += 3) tile_4x3(x + m * K, K, w + (n + j) * K, y + m * N + n + j, N);
        long rest = M - m;
        for (long j = 0; j < PANEL; j += 4) {
            const float *wj = w + (n + j) * K;
            float *yj = y + m * N + n + j;
            if (rest == 3) tile_3x4(x + m * K, K, wj, yj, N);
            else if (rest == 2) tile_2x4(x + m * K, K, wj, yj, N);
            else if (rest == 1) tile_1x4(x + m * K, K, wj, yj, N);
        }
    }
    for (; n < n1; n++)
        for (long m = 0; m < M; m++) tile_1x1(x + m * K, K, w + n * K, y + m * N + n, N);
}

void skinny_gemm(const float *x, long M, long K, const float *w, long N, float *y, int num_threads) {
    /* Chunks of whole panels, at least 4 per thread so that uneven thread speed evens out. */
    long panels = (N + PANEL - 1) / PANEL;
    long per_chunk = panels / (4L * num_threads);
    if (per_chunk < 1) per_chunk = 1;
    long chunk = per_chunk * PANEL;
    long chunks = (N + chunk - 1) / chunk;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (long c = 0; c < chunks; c++) {
        long n0 = c * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
        columns(x, M, K, w, n0, n1, y, N);
    }
}
