/// Decode (M = 1) GEMV on the c4 weight layouts with sdot by element: four 8-column panels at a time (eight
/// accumulator chains; one activation load and one epilogue per 32 columns), 64 k per loop iteration, weights
/// streamed once (each weight vector feeds one sdot, so the loads are ld1 of four registers). KIND selects what
/// the weight bytes hold (counts per 64 k of one panel; the activation load is shared by the four):
///  - SQ_GV_W8:   int8 c4 (pack_rhs_qs8_nxk_c4): 8 weight loads + 64 sdot, 163 instructions per 2048 MACs;
///  - SQ_GV_Q4LO: the 4-bit layout (pack_rhs_qs4_nxk_c4), byte p = 16 w_hi + (w_lo + 8): p & 15 = w_lo + 8 and
///                p >> 4 = w_hi are exact int8 operands (2 instructions per 16 bytes), so sdot adds C + 8 * sum of
///                the low-position activations, which the accumulators start from minus (pack_lhs_qs8_q4lo's head).
///                No multiply by 16 and no shift back, so nothing limits K (the x16 trick overflowed at K >= 2^17).
///                4 weight loads + 32 unpack + 32 sdot, 275 instructions per 2048 MACs;
///  - SQ_GV_Q4YZ: W4A4 (activations in [-8, 7]): sdot(p, y) + sdot(p & 15, z) with y = x_hi, z = 16 x_lo - x_hi + 7
///                (pack_lhs_qs8_q4yz) adds 16 C + 7 sum(w_lo) + T, so one unpack instruction per 32 weights
///                instead of two; the accumulators start from -(7 sum(w_lo) + T) and one shift by 4 gives C, exact
///                while |16 C| < 2^31 (|C| <= 64 K: K <= 2^20 is this kernel's max_k). 4 weight loads + 16 unpack
///                + 32 sdot, 211 instructions per 2048 MACs.
#ifndef SQUAT_TILE_GEMV_C4_NEONDOT_H
#define SQUAT_TILE_GEMV_C4_NEONDOT_H
#include "squat_ops.h"
#include "tile_store.h"

enum { SQ_GV_W8 = 0, SQ_GV_Q4LO = 1, SQ_GV_Q4YZ = 2 };

/* W8: one 16-k activation vector X, panel q's 8 weight vectors from two ld1 of four */
#define SQ_GV_W8_X(P, X)                                                                     \
  {                                                                                          \
    _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {                                    \
      const int8x16x4_t b0 = SQ_LD4_S8(wq[q]), b1 = SQ_LD4_S8(wq[q]);                        \
      SQ_SDOT_LANE(acc[q][0], b0.val[0], X, 0); SQ_SDOT_LANE(acc[q][1], b0.val[1], X, 0);    \
      SQ_SDOT_LANE(acc[q][0], b0.val[2], X, 1); SQ_SDOT_LANE(acc[q][1], b0.val[3], X, 1);    \
      SQ_SDOT_LANE(acc[q][0], b1.val[0], X, 2); SQ_SDOT_LANE(acc[q][1], b1.val[1], X, 2);    \
      SQ_SDOT_LANE(acc[q][0], b1.val[2], X, 3); SQ_SDOT_LANE(acc[q][1], b1.val[3], X, 3);    \
    }                                                                                        \
  }
/* Q4LO: one 32-k block, activations X0 (k 0-15, low nibbles) and X1 (k 16-31, high nibbles) */
#define SQ_GV_Q4LO_G(Q, V, G, X0, X1)                                                        \
  {                                                                                          \
    int8x16_t lo, hi;                                                                        \
    SQ_AND(lo, V, m4); SQ_SDOT_LANE(acc[Q][G % 2], lo, X0, G / 2);                           \
    SQ_SSHR4(hi, V); SQ_SDOT_LANE(acc[Q][G % 2], hi, X1, G / 2);                             \
  }
#define SQ_GV_Q4LO_X(P, X0, X1)                                                              \
  {                                                                                          \
    _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {                                    \
      const int8x16x4_t b0 = SQ_LD4_S8(wq[q]), b1 = SQ_LD4_S8(wq[q]);                        \
      SQ_GV_Q4LO_G(q, b0.val[0], 0, X0, X1) SQ_GV_Q4LO_G(q, b0.val[1], 1, X0, X1)            \
      SQ_GV_Q4LO_G(q, b0.val[2], 2, X0, X1) SQ_GV_Q4LO_G(q, b0.val[3], 3, X0, X1)            \
      SQ_GV_Q4LO_G(q, b1.val[0], 4, X0, X1) SQ_GV_Q4LO_G(q, b1.val[1], 5, X0, X1)            \
      SQ_GV_Q4LO_G(q, b1.val[2], 6, X0, X1) SQ_GV_Q4LO_G(q, b1.val[3], 7, X0, X1)            \
    }                                                                                        \
  }
/* Q4YZ: one 32-k block, operands Y (pairs with the high nibbles) and Z (with the low nibbles + 8) */
#define SQ_GV_Q4YZ_G(Q, V, G, Y, Z)                                                          \
  {                                                                                          \
    int8x16_t u;                                                                             \
    SQ_SDOT_LANE(acc[Q][G % 2], V, Y, G / 2);                                                \
    SQ_AND(u, V, m4); SQ_SDOT_LANE(acc[Q][G % 2], u, Z, G / 2);                              \
  }
#define SQ_GV_Q4YZ_X(P, Y, Z)                                                                \
  {                                                                                          \
    _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {                                    \
      const int8x16x4_t b0 = SQ_LD4_S8(wq[q]), b1 = SQ_LD4_S8(wq[q]);                        \
      SQ_GV_Q4YZ_G(q, b0.val[0], 0, Y, Z) SQ_GV_Q4YZ_G(q, b0.val[1], 1, Y, Z)                \
      SQ_GV_Q4YZ_G(q, b0.val[2], 2, Y, Z) SQ_GV_Q4YZ_G(q, b0.val[3], 3, Y, Z)                \
      SQ_GV_Q4YZ_G(q, b1.val[0], 4, Y, Z) SQ_GV_Q4YZ_G(q, b1.val[1], 5, Y, Z)                \
      SQ_GV_Q4YZ_G(q, b1.val[2], 6, Y, Z) SQ_GV_Q4YZ_G(q, b1.val[3], 7, Y, Z)                \
    }                                                                                        \
  }

/// One activation row x P (1 or 2) panels whose weights start at w0, w1: row i, columns p .. p + 8 P (nc exist).
/// `init` is the per-row start value of every accumulator, `colinit` (Q4YZ) the per-column part.
SQ_ALWAYS_INLINE void sq_gv_c4(const int KIND, const int P, size_t kp, const int8_t *a, const uint8_t *panel0,
                               size_t panel_bytes, size_t head, int32_t init, const sq_out *o, size_t i, size_t p,
                               size_t nc) {
  const int8_t *wq[4];
  const int32_t *colinit[4];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    wq[q] = (const int8_t *)(panel0 + q * panel_bytes + head);
    colinit[q] = (const int32_t *)(panel0 + q * panel_bytes);
  }
  int32x4_t acc[4][2];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    acc[q][0] = acc[q][1] = vdupq_n_s32(init);
    if (KIND == SQ_GV_Q4YZ) {
      acc[q][0] = vmlsq_n_s32(acc[q][0], vld1q_s32(colinit[q]), 7);
      acc[q][1] = vmlsq_n_s32(acc[q][1], vld1q_s32(colinit[q] + 4), 7);
    }
  }
  const int8x16_t m4 = vdupq_n_s8(0x0F);
  (void)m4;
  for (size_t kb = SQ_GV_UNROLL ? kp / 64 : 0; kb; kb--) {
    const int8x16x4_t x = SQ_LD4_S8(a);
    if (KIND == SQ_GV_W8) { SQ_GV_W8_X(P, x.val[0]) SQ_GV_W8_X(P, x.val[1]) SQ_GV_W8_X(P, x.val[2]) SQ_GV_W8_X(P, x.val[3]) }
    if (KIND == SQ_GV_Q4LO) { SQ_GV_Q4LO_X(P, x.val[0], x.val[1]) SQ_GV_Q4LO_X(P, x.val[2], x.val[3]) }
    if (KIND == SQ_GV_Q4YZ) { SQ_GV_Q4YZ_X(P, x.val[0], x.val[1]) SQ_GV_Q4YZ_X(P, x.val[2], x.val[3]) }
  }
  for (size_t kb = (SQ_GV_UNROLL ? kp % 64 : kp) / (KIND == SQ_GV_W8 ? 16 : 32); kb; kb--) {
    if (KIND == SQ_GV_W8) { const int8x16_t x = SQ_LD1_S8(a); SQ_GV_W8_X(P, x) }
    if (KIND == SQ_GV_Q4LO) { const int8x16x2_t x = SQ_LD2_S8(a); SQ_GV_Q4LO_X(P, x.val[0], x.val[1]) }
    if (KIND == SQ_GV_Q4YZ) { const int8x16x2_t x = SQ_LD2_S8(a); SQ_GV_Q4YZ_X(P, x.val[0], x.val[1]) }
  }
  if (KIND == SQ_GV_Q4YZ)
    _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
      acc[q][0] = vshrq_n_s32(acc[q][0], 4);
      acc[q][1] = vshrq_n_s32(acc[q][1], 4);
    }
  sq_store_cols(2 * P, o, i, p, nc, acc);
}

/// The whole call: every row streams all panels (M > 1 is correct, just not what this kernel is for).
/// panel_bytes: bytes per 8-column panel; head: bytes before the first weight of a panel.
SQ_ALWAYS_INLINE void sq_gv_c4_run(const int KIND, size_t m, size_t n, size_t kp, const void *lhs, const void *rhs,
                                   size_t panel_bytes, size_t head, const sq_out *o) {
  const size_t lhs_head = KIND == SQ_GV_W8 ? 0 : SQ_ROUND_UP(m * 4, 16);
  const uint8_t *w = rhs;
  for (size_t i = 0; i < m; i++) {
    const int8_t *a = (const int8_t *)lhs + lhs_head + i * kp;
    const int32_t rowhead = KIND == SQ_GV_W8 ? 0 : ((const int32_t *)lhs)[i];
    const int32_t init = KIND == SQ_GV_Q4LO ? (int32_t)(0u - 8u * (uint32_t)rowhead) : (int32_t)(0u - (uint32_t)rowhead);
    size_t p = 0;
    for (; p + 32 <= n; p += 32) sq_gv_c4(KIND, 4, kp, a, w + p / 8 * panel_bytes, panel_bytes, head, init, o, i, p, 32);
    for (; p < n; p += 8)
      sq_gv_c4(KIND, 1, kp, a, w + p / 8 * panel_bytes, panel_bytes, head, init, o, i, p, n - p < 8 ? n - p : 8);
  }
}
#endif
