/// MKMP register tile (multiple-kernels-multiple-precision packed multiply), R rows x 8 output columns.
/// Each int16 lane holds the 4-bit weights of two adjacent output columns (n, n+1) for one k:
///     lane = (-w_n) + 2^11 * (-w_{n+1})
/// and one smlal (16x16 -> 32, by activation lane) adds lane * x = F_lo + 2^11 * F_hi to an int32 accumulator.
/// After every block of 16 k the fields are split (proof in docs/kernels.md):
///     low  = sext11(acc)            (shl #21, then ssra #21 accumulates it)
///     high = (acc + 1024) >> 11     (srsra #11 accumulates it)
/// The block accumulator restarts with smull, so no reset instruction is needed.
/// Activations must be in [-8, 7]; weights in [-8, 7].
#ifndef SQUAT_TILE_MKMP_4X8_NEON_H
#define SQUAT_TILE_MKMP_4X8_NEON_H
#include "squat_neon.h"
#include "tile_store.h"

#define SQUAT_MKMP_SHIFT_C 11 /* field split position S; low field = bits [0,11), high field = bits [11,32) */

#define SQ_MKMP_PAIR(OFF, LA, LB, FIRST)                                                    \
  {                                                                                         \
    const int16x8_t wv = vld1q_s16(w + (OFF));                                              \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                   \
      acc[r] = (FIRST) ? vmull_laneq_s16(vget_low_s16(wv), xv[r], LA)                       \
                       : vmlal_laneq_s16(acc[r], vget_low_s16(wv), xv[r], LA);              \
      acc[r] = vmlal_high_laneq_s16(acc[r], wv, xv[r], LB);                                 \
    }                                                                                       \
  }

/// One pass over K for R rows: adds sum(low fields) << lo_shift into lo[] and sum(high fields) into hi[].
/// a: R rows of kp int16 activations (row stride a_stride), w: int16 lanes [kp][4] (one panel).
SQ_ALWAYS_INLINE void sq_mkmp_pass(const int R, const int lo_shift, size_t kp, const int16_t *a, size_t a_stride,
                                   const int16_t *w, int32x4_t *lo, int32x4_t *hi) {
  for (size_t k = 0; k < kp; k += 16) {
    int32x4_t acc[4];
    int16x8_t xv[4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) xv[r] = vld1q_s16(a + r * a_stride + k);
    SQ_MKMP_PAIR(0, 0, 1, 1) SQ_MKMP_PAIR(8, 2, 3, 0) SQ_MKMP_PAIR(16, 4, 5, 0) SQ_MKMP_PAIR(24, 6, 7, 0)
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) xv[r] = vld1q_s16(a + r * a_stride + k + 8);
    SQ_MKMP_PAIR(32, 0, 1, 0) SQ_MKMP_PAIR(40, 2, 3, 0) SQ_MKMP_PAIR(48, 4, 5, 0) SQ_MKMP_PAIR(56, 6, 7, 0)
    w += 64;
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
      const int32x4_t t = vshlq_n_s32(acc[r], 32 - SQUAT_MKMP_SHIFT_C);
      lo[r] = lo_shift ? vsraq_n_s32(lo[r], t, 32 - SQUAT_MKMP_SHIFT_C - 4) : vsraq_n_s32(lo[r], t, 32 - SQUAT_MKMP_SHIFT_C);
      hi[r] = vrsraq_n_s32(hi[r], acc[r], SQUAT_MKMP_SHIFT_C);
    }
  }
}

/// Store: column 2j = -lo lane j, column 2j+1 = -hi lane j.
SQ_ALWAYS_INLINE void sq_mkmp_store(int32_t *c, size_t ncols, int32x4_t lo, int32x4_t hi) {
  const int32x4_t a = vnegq_s32(lo), b = vnegq_s32(hi);
  sq_store_s32x8(c, ncols, vzip1q_s32(a, b), vzip2q_s32(a, b));
}
#endif
