/// Shared helpers for storing a register tile row into C with a column tail.
#ifndef SQUAT_TILE_STORE_H
#define SQUAT_TILE_STORE_H
#include <string.h>
#include "squat_neon.h"

SQ_ALWAYS_INLINE void sq_store_s32x8(int32_t *c, size_t ncols, int32x4_t a, int32x4_t b) {
  if (ncols >= 8) { vst1q_s32(c, a); vst1q_s32(c + 4, b); return; }
  int32_t t[8];
  vst1q_s32(t, a); vst1q_s32(t + 4, b);
  memcpy(c, t, ncols * sizeof(int32_t));
}
SQ_ALWAYS_INLINE void sq_store_s32x4(int32_t *c, size_t ncols, int32x4_t a) {
  if (ncols >= 4) { vst1q_s32(c, a); return; }
  int32_t t[4];
  vst1q_s32(t, a);
  memcpy(c, t, ncols * sizeof(int32_t));
}
#endif
