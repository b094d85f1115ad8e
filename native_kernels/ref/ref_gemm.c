/// Scalar reference GEMMs (see squat_ref.h).
#include "squat_ref.h"

void ref_gemm_qs8_qs8(size_t m, size_t n, size_t k, const int8_t *x, size_t xs, const int8_t *w, size_t ws,
                      int32_t *c, size_t cs) {
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      int64_t s = 0;
      for (size_t l = 0; l < k; l++) s += (int64_t)x[i * xs + l] * (int64_t)w[j * ws + l];
      c[i * cs + j] = (int32_t)s;
    }
}

/* One MKMP pass: lanes L = (-w_a) + 2^11 (-w_b); acc += L * a over blocks of 16 k; after each block
   low = sext11(acc), high = (acc + 1024) >> 11. Returns the two sums through *sa, *sb (negated back). */
static void mkmp_pass(size_t k, const int8_t *a, const int8_t *wa, const int8_t *wb, int64_t *sa, int64_t *sb) {
  int32_t lo_tot = 0, hi_tot = 0;
  for (size_t k0 = 0; k0 < k; k0 += SQUAT_MKMP_KB) {
    int32_t acc = 0;
    for (size_t l = k0; l < k0 + SQUAT_MKMP_KB && l < k; l++) {
      int16_t lane = (int16_t)(-(int32_t)wa[l] + (1 << SQUAT_MKMP_SHIFT) * (wb ? -(int32_t)wb[l] : 0));
      acc += (int32_t)lane * (int32_t)a[l];
    }
    int32_t low = (int32_t)((uint32_t)acc << (32 - SQUAT_MKMP_SHIFT)) >> (32 - SQUAT_MKMP_SHIFT);
    lo_tot += low;
    hi_tot += (int32_t)(((int64_t)acc + (1 << (SQUAT_MKMP_SHIFT - 1))) >> SQUAT_MKMP_SHIFT);
  }
  *sa = -(int64_t)lo_tot;
  *sb = -(int64_t)hi_tot;
}

void ref_gemm_mkmp(size_t m, size_t n, size_t k, const int8_t *x, size_t xs, const int8_t *w, size_t ws,
                   int32_t *c, size_t cs, int nibble_split) {
  int8_t hi[k ? k : 1], lo[k ? k : 1];
  for (size_t i = 0; i < m; i++) {
    const int8_t *xr = x + i * xs;
    for (size_t l = 0; l < k; l++) {
      hi[l] = (int8_t)(xr[l] >> 4);          /* x = 16*hi + lo + 8, hi and lo in [-8,7] */
      lo[l] = (int8_t)((xr[l] & 15) - 8);
    }
    for (size_t j = 0; j < n; j += 2) {
      const int8_t *wa = w + j * ws, *wb = (j + 1 < n) ? w + (j + 1) * ws : NULL;
      int64_t a0, b0, a1, b1;
      if (nibble_split) {
        mkmp_pass(k, hi, wa, wb, &a1, &b1);
        mkmp_pass(k, lo, wa, wb, &a0, &b0);
        int64_t ra = 0, rb = 0; /* + 8 * rowsum(W) restores the offset taken out of lo */
        for (size_t l = 0; l < k; l++) { ra += wa[l]; rb += wb ? wb[l] : 0; }
        a0 += 16 * a1 + 8 * ra; b0 += 16 * b1 + 8 * rb;
      } else {
        mkmp_pass(k, xr, wa, wb, &a0, &b0);
      }
      c[i * cs + j] = (int32_t)a0;
      if (wb) c[i * cs + j + 1] = (int32_t)b0;
    }
  }
}

void ref_gemm_f32(size_t m, size_t n, size_t k, const float *x, size_t xs, const float *w, size_t ws, float *c, size_t cs) {
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      float s = 0.0f;
      for (size_t l = 0; l < k; l++) s = __builtin_fmaf(x[i * xs + l], w[j * ws + l], s);
      c[i * cs + j] = s;
    }
}

static double f16_to_double(uint16_t h) { _Float16 v; __builtin_memcpy(&v, &h, 2); return (double)v; }
static uint16_t double_to_f16(double d) { _Float16 v = (_Float16)d; uint16_t h; __builtin_memcpy(&h, &v, 2); return h; }

void ref_gemm_f16(size_t m, size_t n, size_t k, const uint16_t *x, size_t xs, const uint16_t *w, size_t ws,
                  uint16_t *c, size_t cs) {
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      uint16_t s = 0;
      /* a*b+c of binary16 values is exact in double, so one conversion = one fp16 rounding = fused fmla. */
      for (size_t l = 0; l < k; l++)
        s = double_to_f16(f16_to_double(x[i * xs + l]) * f16_to_double(w[j * ws + l]) + f16_to_double(s));
      c[i * cs + j] = s;
    }
}
