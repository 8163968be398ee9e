/* What the native CPU kernels (cpu_*.c) share: the AVX2 + FMA target attribute and a horizontal sum. */
#ifndef STRUCTGEN_CPU_SIMD_H
#define STRUCTGEN_CPU_SIMD_H
#include <immintrin.h>

/* Functions built for AVX2 + FMA; the library itself is built for any x86-64, so that the CPU check
 * (skinny_gemm_supported) runs everywhere before anything marked KERNEL is called. */
#define KERNEL __attribute__((target("avx2,fma")))

/* The sum of the 8 lanes of v. */
KERNEL static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(s);
}

#endif
