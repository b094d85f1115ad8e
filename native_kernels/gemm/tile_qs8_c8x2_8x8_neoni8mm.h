/// Register tile shared by the smmla kernels: P row pairs x 8 columns (4 column pairs), K block 8.
/// smmla computes a 2x2 int32 block from two 2x8 int8 operands (32 MACs per instruction).
#ifndef SQUAT_TILE_QS8_C8X2_8X8_NEONI8MM_H
#define SQUAT_TILE_QS8_C8X2_8X8_NEONI8MM_H
#include "squat_neon.h"
#include "tile_store.h"

/// acc[p][j] = [c(2p,2j) c(2p,2j+1) c(2p+1,2j) c(2p+1,2j+1)] -> rows of 8 columns.
SQ_ALWAYS_INLINE void sq_store_mmla_pair(int32x4_t acc[4], int32_t *c, size_t c_stride, size_t nrows, size_t ncols) {
  const int64x2_t a0 = vreinterpretq_s64_s32(acc[0]), a1 = vreinterpretq_s64_s32(acc[1]);
  const int64x2_t a2 = vreinterpretq_s64_s32(acc[2]), a3 = vreinterpretq_s64_s32(acc[3]);
  sq_store_s32x8(c, ncols, vreinterpretq_s32_s64(vzip1q_s64(a0, a1)), vreinterpretq_s32_s64(vzip1q_s64(a2, a3)));
  if (nrows > 1)
    sq_store_s32x8(c + c_stride, ncols, vreinterpretq_s32_s64(vzip2q_s64(a0, a1)),
                   vreinterpretq_s32_s64(vzip2q_s64(a2, a3)));
}
#endif
