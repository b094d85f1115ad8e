/// Register tile shared by the W8A8 and W4 (unpacked panel) sdot kernels: R rows x 8 columns,
/// K in blocks of 16 (four sdot lanes per 16-byte activation load). acc[r][0] = cols 0-3, acc[r][1] = cols 4-7.
#ifndef SQUAT_TILE_QS8_C4_8X8_NEONDOT_H
#define SQUAT_TILE_QS8_C4_8X8_NEONDOT_H
#include "squat_neon.h"
#include "tile_store.h"

#define SQ_C4_STEP(L)                                                   \
  {                                                                     \
    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);            \
    w += 32;                                                            \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {               \
      acc[r][0] = vdotq_laneq_s32(acc[r][0], w0, x[r], L);              \
      acc[r][1] = vdotq_laneq_s32(acc[r][1], w1, x[r], L);              \
    }                                                                   \
  }

/// @param w panel of 8 columns in c4 order (8*kp bytes); a: R rows of kp int8, row stride a_stride.
SQ_ALWAYS_INLINE void sq_tile_qs8_c4_x8(const int R, size_t kp, const int8_t *a, size_t a_stride,
                                        const int8_t *w, int32_t *c, size_t c_stride, size_t ncols) {
  int32x4_t acc[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vdupq_n_s32(0);
  for (size_t k = 0; k < kp; k += 16) {
    int8x16_t x[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) x[r] = vld1q_s8(a + r * a_stride + k);
    SQ_C4_STEP(0) SQ_C4_STEP(1) SQ_C4_STEP(2) SQ_C4_STEP(3)
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) sq_store_s32x8(c + r * c_stride, ncols, acc[r][0], acc[r][1]);
}
#endif
