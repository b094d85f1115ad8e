/// FP32 register tiles in intrinsics: the remainder tiles (R < 8 rows) of the fp32 kernels. Activations come in
/// 4-element chunks; row r of chunk c sits at a + c * a_step + r * 4.
#ifndef SQUAT_TILE_F32_H
#define SQUAT_TILE_F32_H
#include <string.h>
#include "squat_neon.h"

SQ_ALWAYS_INLINE void sq_f32_store_rows(const int R, float32x4_t acc[][2], float *c, size_t cs, size_t nc) {
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
    if (nc >= 8) { vst1q_f32(c + r * cs, acc[r][0]); vst1q_f32(c + r * cs + 4, acc[r][1]); }
    else { /* column tail: lane by lane from the registers (no stack buffer) */
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) if ((size_t)j < nc) c[r * cs + j] = vgetq_lane_f32(acc[r][0], j);
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) if ((size_t)(j + 4) < nc) c[r * cs + 4 + j] = vgetq_lane_f32(acc[r][1], j);
    }
  }
}

#define SQ_F32_STEP(L)                                                  \
  {                                                                     \
    const float32x4_t w0 = vld1q_f32(w), w1 = vld1q_f32(w + 4);         \
    w += 8;                                                             \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {               \
      acc[r][0] = vfmaq_laneq_f32(acc[r][0], w0, x[r], L);              \
      acc[r][1] = vfmaq_laneq_f32(acc[r][1], w1, x[r], L);              \
    }                                                                   \
  }

/// R rows x 8 columns, one fma per k in ascending k per output (the order ref_gemm_f32 uses).
SQ_ALWAYS_INLINE void sq_f32_tile(const int R, size_t kp, const float *a, size_t a_step, const float *w, float *c,
                                  size_t cs, size_t nc) {
  float32x4_t acc[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
  for (size_t k = 0; k < kp; k += 4, a += a_step) {
    float32x4_t x[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) x[r] = vld1q_f32(a + r * 4);
    SQ_F32_STEP(0) SQ_F32_STEP(1) SQ_F32_STEP(2) SQ_F32_STEP(3)
  }
  sq_f32_store_rows(R, acc, c, cs, nc);
}
#endif
