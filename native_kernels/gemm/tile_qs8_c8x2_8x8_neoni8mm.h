/// Register tile shared by the smmla kernels: P row pairs x 8 columns (4 column pairs), K block 8. smmla computes a
/// 2x2 int32 block from two 2x8 int8 operands (32 MACs per instruction). Activations come in 8-row blocks of
/// 8-byte chunks with rows padded to pairs (pack_lhs_qs8_blocked kc 8, pair_pad), so the four row-pair operands of
/// a K block are one contiguous 64-byte load. R = 8 (4 pairs): per 16 k, 2 activation + 2 weight loads (ld1 of
/// four) + 32 smmla + subs + b.ne = 38 instructions per 1024 MACs (squat_ops.h); remainder pairs in intrinsics.
#ifndef SQUAT_TILE_QS8_C8X2_8X8_NEONI8MM_H
#define SQUAT_TILE_QS8_C8X2_8X8_NEONI8MM_H
#include "squat_ops.h"
#include "tile_store.h"

#define SQ_MM_K8()                                                       \
  {                                                                      \
    const int8x16x4_t x = SQ_LD4_S8(a), b = SQ_LD4_S8(w);                \
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)                  \
      _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) SQ_SMMLA(acc[q][j], x.val[q], b.val[j]); \
  }

SQ_ALWAYS_INLINE void sq_mm_loop8(size_t kp, const int8_t *a, const int8_t *w, int32x4_t acc[4][4]) {
  for (size_t kb = kp / 16; kb; kb--) {
    SQ_MM_K8() SQ_MM_K8()
  }
}

SQ_ALWAYS_INLINE void sq_mm_loop_tail(const int P, size_t kp, const int8_t *a, size_t a_step, const int8_t *w,
                                      int32x4_t acc[4][4]) {
  for (size_t k = 0; k < kp; k += 8, a += a_step, w += 64) {
    int8x16_t x[4];
    _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) x[q] = vld1q_s8(a + 16 * q);
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
      const int8x16_t b = vld1q_s8(w + 16 * j);
      _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) acc[q][j] = vmmlaq_s32(acc[q][j], x[q], b);
    }
  }
}

/// acc[q][j] = [c(2q,2j) c(2q,2j+1) c(2q+1,2j) c(2q+1,2j+1)] -> rows 2q and 2q+1 of 8 columns.
SQ_ALWAYS_INLINE void sq_mm_store_pairs(const int P, size_t R, int32x4_t acc[4][4], const sq_out *t, size_t nc) {
  int32x4_t rows[8][2];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    const int64x2_t a0 = vreinterpretq_s64_s32(acc[q][0]), a1 = vreinterpretq_s64_s32(acc[q][1]);
    const int64x2_t a2 = vreinterpretq_s64_s32(acc[q][2]), a3 = vreinterpretq_s64_s32(acc[q][3]);
    rows[2 * q][0] = vreinterpretq_s32_s64(vzip1q_s64(a0, a1));
    rows[2 * q][1] = vreinterpretq_s32_s64(vzip1q_s64(a2, a3));
    rows[2 * q + 1][0] = vreinterpretq_s32_s64(vzip2q_s64(a0, a1));
    rows[2 * q + 1][1] = vreinterpretq_s32_s64(vzip2q_s64(a2, a3));
  }
  if (R == 2 * (size_t)P) sq_store_rows(2 * P, t, nc, rows);
  else sq_store_rows(2 * P - 1, t, nc, rows); /* odd R: the zero pad row is not stored */
}

SQ_ALWAYS_INLINE void sq_mm_block(size_t R, size_t kp, const int8_t *blk, const int8_t *wp, const sq_out *t,
                                  size_t nc) {
  int32x4_t acc[4][4];
  _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) acc[q][0] = acc[q][1] = acc[q][2] = acc[q][3] = vdupq_n_s32(0);
  if (R >= 7) { /* 7 rows are padded to 4 full pairs */
    sq_mm_loop8(kp, blk, wp, acc);
    sq_mm_store_pairs(4, R, acc, t, nc);
    return;
  }
  const size_t Rp = SQ_ROUND_UP(R, 2);
  switch (Rp / 2) {
    case 3: sq_mm_loop_tail(3, kp, blk, Rp * 8, wp, acc); sq_mm_store_pairs(3, R, acc, t, nc); break;
    case 2: sq_mm_loop_tail(2, kp, blk, Rp * 8, wp, acc); sq_mm_store_pairs(2, R, acc, t, nc); break;
    default: sq_mm_loop_tail(1, kp, blk, Rp * 8, wp, acc); sq_mm_store_pairs(1, R, acc, t, nc); break;
  }
}

/// 4-bit panel (pack_rhs_qs4_nxk_c4) -> the int8 c8 panel smmla reads: the c4 vectors of k-groups 2q and 2q+1
/// interleave by 32-bit element into column pairs (zip1/zip2).
/* One 8-k chunk from the c4 vectors of its two k-groups a[0..3] = (g,h0), (g,h1), (g+1,h0), (g+1,h1), stored as
   the four column-pair vectors smmla reads. squat_ops.h order: each chunk's four results live only until stored. */
#define SQ_C4_TO_C8_ST(dst, a0, a1, a2, a3)                                  \
  {                                                                          \
    int8x16_t o0_, o1_, o2_, o3_;                                            \
    SQ_ZIP1_32(o0_, a0, a2); SQ_ZIP2_32(o1_, a0, a2); SQ_STP_S8(dst, o0_, o1_); \
    SQ_ZIP1_32(o2_, a1, a3); SQ_ZIP2_32(o3_, a1, a3); SQ_STP_S8(dst, o2_, o3_); \
  }
SQ_ALWAYS_INLINE void sq_q4_unpack_c8(size_t kp, const uint8_t *panel, int8_t *dst) {
  const int8_t *src = (const int8_t *)panel + 32;
  const int8x16_t m4 = vdupq_n_s8(0x0F), eight = vdupq_n_s8(8);
  for (size_t b = kp / 32; b; b--) { /* per 32 k: 2 loads, 24 unpack, 16 zip, 8 stp */
    const int8x16x4_t p0 = SQ_LD4_S8(src), p1 = SQ_LD4_S8(src);
    const int8x16x4_t *pp[2] = {&p0, &p1};
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) { /* k 0-7 / 8-15: low nibbles - 8 */
      int8x16_t l[4];
      _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) { SQ_AND(l[v], pp[h]->val[v], m4); SQ_SUB(l[v], l[v], eight); }
      SQ_C4_TO_C8_ST(dst, l[0], l[1], l[2], l[3])
    }
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) { /* k 16-23 / 24-31: arithmetic high nibbles */
      int8x16_t u[4];
      _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) SQ_SSHR4(u[v], pp[h]->val[v]);
      SQ_C4_TO_C8_ST(dst, u[0], u[1], u[2], u[3])
    }
  }
}

/// The whole call (see sq_c4_run); Q4: unpack each 4-bit panel into `unpacked` first.
SQ_ALWAYS_INLINE void sq_mm_run(const int Q4, size_t m, size_t n, size_t kp, const int8_t *a, const void *w,
                                int8_t *unpacked, const sq_out *o) {
  for (size_t p = 0; p < n; p += 8) {
    const size_t nc = n - p < 8 ? n - p : 8;
    const int8_t *wp = (const int8_t *)w + p * kp;
    if (Q4) {
      sq_q4_unpack_c8(kp, (const uint8_t *)w + p / 8 * (32 + kp * 4), unpacked);
      wp = unpacked;
    }
    for (size_t i0 = 0; i0 < m; i0 += 8) {
      const size_t R = m - i0 < 8 ? m - i0 : 8;
      const sq_out t = sq_out_at(o, i0, p);
      const sq_out d = nc == 8 ? t : sq_out_tail(&t);
      sq_mm_block(R, kp, a + i0 * kp, wp, &d, nc);
      if (nc < 8) sq_flush_tail(&t, R, nc);
    }
  }
}
#endif
