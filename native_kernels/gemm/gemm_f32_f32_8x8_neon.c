/// FP32 baseline: fmla by lane, MR=8, NR=8, K block 4. Packers: pack_rhs_f32_nxk, pack_lhs_f32_rows.
#include "squat_fgemm_interface.h"
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_neon.h"
#include <string.h>

static const size_t kMR = 8, kNR = 8, kKR = 1, kKB = 4;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) * 4; }
static void pack_rhs(size_t n, size_t k, const void *w, size_t ws, void *out) {
  pack_rhs_f32_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 4; }
static void pack_lhs(size_t m, size_t k, const void *x, size_t xs, void *out) {
  pack_lhs_f32_rows(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}

#define SQ_F32_STEP(L)                                                    \
  {                                                                       \
    const float32x4_t w0 = vld1q_f32(w), w1 = vld1q_f32(w + 4);           \
    w += 8;                                                               \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                 \
      acc[r][0] = vfmaq_laneq_f32(acc[r][0], w0, x[r], L);                \
      acc[r][1] = vfmaq_laneq_f32(acc[r][1], w1, x[r], L);                \
    }                                                                     \
  }

SQ_ALWAYS_INLINE void tile(const int R, size_t kp, const float *a, const float *w, float *c, size_t cs, size_t nc) {
  float32x4_t acc[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
  for (size_t k = 0; k < kp; k += 4) {
    float32x4_t x[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) x[r] = vld1q_f32(a + r * kp + k);
    SQ_F32_STEP(0) SQ_F32_STEP(1) SQ_F32_STEP(2) SQ_F32_STEP(3)
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
    if (nc >= 8) { vst1q_f32(c + r * cs, acc[r][0]); vst1q_f32(c + r * cs + 4, acc[r][1]); }
    else { float t[8]; vst1q_f32(t, acc[r][0]); vst1q_f32(t + 4, acc[r][1]); memcpy(c + r * cs, t, nc * 4); }
  }
}

void squat_gemm_f32_f32_8x8__neon(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, void *cv, size_t cs) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const float *a = lhs;
  float *c = cv;
  for (size_t p = 0; p < n; p += kNR) {
    const float *w = (const float *)rhs + p * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    size_t i = 0;
    for (; i + 8 <= m; i += 8) tile(8, kp, a + i * kp, w, c + i * cs + p, cs, nc);
    if (i + 4 <= m) { tile(4, kp, a + i * kp, w, c + i * cs + p, cs, nc); i += 4; }
    for (; i < m; i++) tile(1, kp, a + i * kp, w, c + i * cs + p, cs, nc);
  }
}

const squat_fgemm_ukernel squat_ukernel_gemm_f32_f32_8x8_neon = {
  "gemm_f32_f32_8x8_neon", "fp32", 4, SQUAT_FEAT_NEON,
  get_mr, get_nr, get_kr, rhs_size, pack_rhs, lhs_size, pack_lhs, squat_gemm_f32_f32_8x8__neon};
