/// Register tile shared by the W8A8 and W4 (unpacked panel) sdot kernels: R rows x 8 columns, K in blocks of 16.
/// Activations come in 8-row blocks of 16-byte chunks (pack_lhs_qs8_blocked kc 16): row r of chunk c at
/// a + c * a_step + r * 16. acc[r][0] = columns 0-3, acc[r][1] = columns 4-7.
/// R = 8: 16 accumulators + 8 activation vectors + 4 weight vectors; per 16 k: 2 activation loads + 2 weight loads
/// (ld1 of four registers) + 64 sdot + subs + b.ne = 70 instructions per 1024 MACs, written with squat_ops.h so
/// the loop is exactly that. R < 8 (remainder rows) in plain intrinsics.
#ifndef SQUAT_TILE_QS8_C4_8X8_NEONDOT_H
#define SQUAT_TILE_QS8_C4_8X8_NEONDOT_H
#include "squat_ops.h"
#include "tile_store.h"

#define SQ_C4_LANE(W0, W1, L)                                          \
  _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {                \
    SQ_SDOT_LANE(acc[r][0], W0, x[r], L);                              \
    SQ_SDOT_LANE(acc[r][1], W1, x[r], L);                              \
  }

SQ_ALWAYS_INLINE void sq_c4_loop8(size_t kp, const int8_t *a, const int8_t *w, int32x4_t acc[8][2]) {
  for (size_t kb = kp / 16; kb; kb--) {
    const int8x16x4_t xa = SQ_LD4_S8(a), xb = SQ_LD4_S8(a);
    const int8x16_t x[8] = {xa.val[0], xa.val[1], xa.val[2], xa.val[3], xb.val[0], xb.val[1], xb.val[2], xb.val[3]};
    const int8x16x4_t w0 = SQ_LD4_S8(w);
    SQ_C4_LANE(w0.val[0], w0.val[1], 0) SQ_C4_LANE(w0.val[2], w0.val[3], 1)
    const int8x16x4_t w1 = SQ_LD4_S8(w);
    SQ_C4_LANE(w1.val[0], w1.val[1], 2) SQ_C4_LANE(w1.val[2], w1.val[3], 3)
  }
}

#define SQ_C4_STEP(L)                                                   \
  {                                                                     \
    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);            \
    w += 32;                                                            \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {               \
      acc[r][0] = vdotq_laneq_s32(acc[r][0], w0, x[r], L);              \
      acc[r][1] = vdotq_laneq_s32(acc[r][1], w1, x[r], L);              \
    }                                                                   \
  }

SQ_ALWAYS_INLINE void sq_c4_loop_tail(const int R, size_t kp, const int8_t *a, size_t a_step, const int8_t *w,
                                      int32x4_t acc[][2]) {
  for (size_t k = 0; k < kp; k += 16, a += a_step) {
    int8x16_t x[4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) x[r] = vld1q_s8(a + r * 16);
    SQ_C4_STEP(0) SQ_C4_STEP(1) SQ_C4_STEP(2) SQ_C4_STEP(3)
  }
}

/// 4-bit panel (pack_rhs_qs4_nxk_c4: 32-byte head, then per 32 k eight vectors (g, h) whose bytes hold
/// (w[k + 16] << 4) | (w[k] + 8)) -> the int8 c4 panel: low nibbles - 8 are k-groups 0-3 of the block, the
/// arithmetic high nibbles k-groups 4-7, each already in c4 order. 3 instructions per 32 weights.
SQ_ALWAYS_INLINE void sq_q4_unpack_c4(size_t kp, const uint8_t *panel, int8_t *dst) {
  const int8_t *src = (const int8_t *)panel + 32;
  const int8x16_t m4 = vdupq_n_s8(0x0F), eight = vdupq_n_s8(8);
  for (size_t b = kp / 32; b; b--) { /* per 32 k: 2 loads, 24 unpack, 4 stores (ld1/st1 of four registers) */
    const int8x16x4_t p0 = SQ_LD4_S8(src), p1 = SQ_LD4_S8(src);
    int8x16x4_t l0, l1, h0, h1;
    _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) {
      l0.val[v] = vsubq_s8(vandq_s8(p0.val[v], m4), eight);
      l1.val[v] = vsubq_s8(vandq_s8(p1.val[v], m4), eight);
    }
    SQ_ST4_S8(dst, l0);
    SQ_ST4_S8(dst, l1);
    _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) {
      h0.val[v] = vshrq_n_s8(p0.val[v], 4);
      h1.val[v] = vshrq_n_s8(p1.val[v], 4);
    }
    SQ_ST4_S8(dst, h0);
    SQ_ST4_S8(dst, h1);
  }
}

/// One 8-column panel for the rows of one 8-row block (R = 8: the squat_ops tile; R < 8: a 4-row and single-row
/// intrinsics tiles).
SQ_ALWAYS_INLINE void sq_c4_block(size_t R, size_t kp, const int8_t *blk, const int8_t *wp, const sq_out *t,
                                  size_t nc) {
  if (R == 8) {
    int32x4_t acc[8][2];
    _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = vdupq_n_s32(0);
    sq_c4_loop8(kp, blk, wp, acc);
    sq_store_rows(8, t, nc, acc); /* after the loop: nothing but the accumulators lives across it */
    return;
  }
  size_t r0 = 0;
  if (R >= 4) {
    int32x4_t acc[4][2];
    _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = vdupq_n_s32(0);
    sq_c4_loop_tail(4, kp, blk, R * 16, wp, acc);
    sq_store_rows(4, t, nc, acc);
    r0 = 4;
  }
  for (; r0 < R; r0++) {
    int32x4_t acc[1][2] = {{vdupq_n_s32(0), vdupq_n_s32(0)}};
    sq_c4_loop_tail(1, kp, blk + r0 * 16, R * 16, wp, acc);
    const sq_out tr = sq_out_at(t, r0, 0);
    sq_store_rows(1, &tr, nc, acc);
  }
}

/// The whole call: panels of 8 columns, 8-row blocks, each tile stored through o (int32 or dequantized float).
/// Q4 (a constant): w is the 4-bit layout, unpacked panel by panel into scratch (after the 8 x 8 tail tile).
SQ_ALWAYS_INLINE void sq_c4_run(const int Q4, size_t m, size_t n, size_t kp, const int8_t *a, const void *w,
                                int8_t *unpacked, const sq_out *o) {
  for (size_t p = 0; p < n; p += 8) {
    const size_t nc = n - p < 8 ? n - p : 8;
    const int8_t *wp = (const int8_t *)w + p * kp;
    if (Q4) {
      sq_q4_unpack_c4(kp, (const uint8_t *)w + p / 8 * (32 + kp * 4), unpacked);
      wp = unpacked;
    }
    for (size_t i0 = 0; i0 < m; i0 += 8) {
      const size_t R = m - i0 < 8 ? m - i0 : 8;
      const sq_out t = sq_out_at(o, i0, p);
      const sq_out d = nc == 8 ? t : sq_out_tail(&t);
      sq_c4_block(R, kp, a + i0 * kp, wp, &d, nc);
      if (nc < 8) sq_flush_tail(&t, R, nc);
    }
  }
}
#endif
