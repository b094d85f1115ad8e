/// FP16 register tiles in intrinsics: the SIMDe path of every fp16 kernel and the remainder tiles (R < 8 rows)
/// on ARM. Activations come in 8-element chunks; row r of chunk c sits at a + c * a_step + r * 8.
#ifndef SQUAT_TILE_F16_H
#define SQUAT_TILE_F16_H
#include <string.h>
#include "squat_neon.h"

SQ_ALWAYS_INLINE void sq_f16_store_rows(const int R, float16x8_t acc[][2], uint16_t *c, size_t cs, size_t nc) {
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
    if (nc >= 16) {
      vst1q_u16(c + r * cs, vreinterpretq_u16_f16(acc[r][0]));
      vst1q_u16(c + r * cs + 8, vreinterpretq_u16_f16(acc[r][1]));
    } else { /* column tail: lane by lane from the registers (no stack buffer) */
      const uint16x8_t a = vreinterpretq_u16_f16(acc[r][0]), b = vreinterpretq_u16_f16(acc[r][1]);
      _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) if ((size_t)j < nc) c[r * cs + j] = vgetq_lane_u16(a, j);
      _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) if ((size_t)(j + 8) < nc) c[r * cs + 8 + j] = vgetq_lane_u16(b, j);
    }
  }
}

#define SQ_F16_STEP(L)                                                  \
  {                                                                     \
    const float16x8_t w0 = vld1q_f16(w), w1 = vld1q_f16(w + 8);         \
    w += 16;                                                            \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {               \
      acc[r][0] = vfmaq_laneq_f16(acc[r][0], w0, x[r], L);              \
      acc[r][1] = vfmaq_laneq_f16(acc[r][1], w1, x[r], L);              \
    }                                                                   \
  }

/// R rows x 16 columns, one fma per k in ascending k per output (the order ref_gemm_f16 uses).
SQ_ALWAYS_INLINE void sq_f16_tile(const int R, size_t kp, const sq_f16_t *a, size_t a_step, const sq_f16_t *w,
                                  uint16_t *c, size_t cs, size_t nc) {
  float16x8_t acc[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vreinterpretq_f16_u16(vdupq_n_u16(0));
  for (size_t k = 0; k < kp; k += 8, a += a_step) {
    float16x8_t x[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) x[r] = vld1q_f16(a + r * 8);
    SQ_F16_STEP(0) SQ_F16_STEP(1) SQ_F16_STEP(2) SQ_F16_STEP(3)
    SQ_F16_STEP(4) SQ_F16_STEP(5) SQ_F16_STEP(6) SQ_F16_STEP(7)
  }
  sq_f16_store_rows(R, acc, c, cs, nc);
}
#endif
