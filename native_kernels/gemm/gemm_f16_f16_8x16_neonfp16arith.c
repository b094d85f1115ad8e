/// FP16 baseline (the paper's reference precision): fmla on half precision by lane (8 MACs per instruction),
/// MR=8, NR=16, K block 8 -- the same register blocking effort as the int8 kernels (16 accumulator registers,
/// one activation vector per row per K block). Accumulates in fp16, like the paper's FP16 path.
/// Packers: pack_rhs_f16_nxk, pack_lhs_f16_rows.
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
#error "gemm_f16_f16_8x16_neonfp16arith needs __ARM_FEATURE_FP16_VECTOR_ARITHMETIC (-march=armv8.2-a+fp16)"
#endif
#include "squat_fgemm_interface.h"
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_neon.h"
#include <string.h>

static const size_t kMR = 8, kNR = 16, kKR = 1, kKB = 8;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) * 2; }
static void pack_rhs(size_t n, size_t k, const void *w, size_t ws, void *out) {
  pack_rhs_f16_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 2; }
static void pack_lhs(size_t m, size_t k, const void *x, size_t xs, void *out) {
  pack_lhs_f16_rows(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}

#define SQ_F16_STEP(L)                                                    \
  {                                                                       \
    const float16x8_t w0 = vld1q_f16(w), w1 = vld1q_f16(w + 8);           \
    w += 16;                                                              \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                 \
      acc[r][0] = vfmaq_laneq_f16(acc[r][0], w0, x[r], L);                \
      acc[r][1] = vfmaq_laneq_f16(acc[r][1], w1, x[r], L);                \
    }                                                                     \
  }

SQ_ALWAYS_INLINE void tile(const int R, size_t kp, const sq_f16_t *a, const sq_f16_t *w, uint16_t *c, size_t cs, size_t nc) {
  float16x8_t acc[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vreinterpretq_f16_u16(vdupq_n_u16(0));
  for (size_t k = 0; k < kp; k += 8) {
    float16x8_t x[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) x[r] = vld1q_f16(a + r * kp + k);
    SQ_F16_STEP(0) SQ_F16_STEP(1) SQ_F16_STEP(2) SQ_F16_STEP(3)
    SQ_F16_STEP(4) SQ_F16_STEP(5) SQ_F16_STEP(6) SQ_F16_STEP(7)
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
    if (nc >= 16) {
      vst1q_u16(c + r * cs, vreinterpretq_u16_f16(acc[r][0]));
      vst1q_u16(c + r * cs + 8, vreinterpretq_u16_f16(acc[r][1]));
    } else {
      uint16_t t[16];
      vst1q_u16(t, vreinterpretq_u16_f16(acc[r][0])); vst1q_u16(t + 8, vreinterpretq_u16_f16(acc[r][1]));
      memcpy(c + r * cs, t, nc * 2);
    }
  }
}

void squat_gemm_f16_f16_8x16__neonfp16arith(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                             void *cv, size_t cs) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const sq_f16_t *a = lhs;
  uint16_t *c = cv;
  for (size_t p = 0; p < n; p += kNR) {
    const sq_f16_t *w = (const sq_f16_t *)rhs + p * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    size_t i = 0;
    for (; i + 8 <= m; i += 8) tile(8, kp, a + i * kp, w, c + i * cs + p, cs, nc);
    if (i + 4 <= m) { tile(4, kp, a + i * kp, w, c + i * cs + p, cs, nc); i += 4; }
    for (; i < m; i++) tile(1, kp, a + i * kp, w, c + i * cs + p, cs, nc);
  }
}

const squat_fgemm_ukernel squat_ukernel_gemm_f16_f16_8x16_neonfp16arith = {
  "gemm_f16_f16_8x16_neonfp16arith", "fp16", 2, SQUAT_FEAT_NEON | SQUAT_FEAT_FP16,
  get_mr, get_nr, get_kr, rhs_size, pack_rhs, lhs_size, pack_lhs, squat_gemm_f16_f16_8x16__neonfp16arith};
