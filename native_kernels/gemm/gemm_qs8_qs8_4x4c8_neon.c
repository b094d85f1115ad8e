/// W8A8 fallback for cores without dotprod: smull / smull2 (8 int8 products -> int16; |p| <= 2^14, so no int16
/// overflow) then sadalp (pairwise add-accumulate into int32). MR=4, NR=4, 8 k per instruction, 4 MACs per
/// instruction at best. Registers: 16 accumulators + 4 activation + 4 weight vectors + 2 products. Per 16 k:
/// 1 activation + 1 weight load (ld1 of four) + 16 smull + 16 smull2 + 32 sadalp + subs + b.ne = 68
/// instructions per 256 MACs (272 per 1024), written with squat_ops.h so nothing spills.
/// Packers: pack_rhs_qs8_nxk_c16 (RHS: per column 16 consecutive k), pack_lhs_qs8_blocked (LHS: 4-row blocks).
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_ops.h"
#include "tile_store.h"

static const size_t kMR = 4, kNR = 4, kKR = 8, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs8_nxk_c16(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_blocked(16, kMR, 0, SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static void pack_lhs_quant(size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, void *out) {
  pack_lhs_quant_blocked(16, kMR, 0, SQ_ROUND_UP(k, kKB), m, k, x, xs, rows, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 256; /* tail tile */ }

/* R rows (activation vectors x[r]: 16 k) x 4 columns (b[j]: 16 k), one K block */
#define SQ_SMULL_BLOCK(R)                                                                     \
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                         \
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {                                     \
      int16x8_t lo, hi;                                                                       \
      SQ_SMULL_LO(lo, x[r], b[j]);                                                            \
      SQ_SADALP(acc[r][j], lo);                                                               \
      SQ_SMULL_HI(hi, x[r], b[j]);                                                            \
      SQ_SADALP(acc[r][j], hi);                                                               \
    }

SQ_ALWAYS_INLINE void tile(const int R, size_t kp, const int8_t *a, size_t a_step, const int8_t *w,
                           const sq_out *t, size_t nc) {
  int32x4_t acc[4][4];
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = vdupq_n_s32(0);
  if (R == 4) {
    for (size_t kb = kp / 16; kb; kb--) {
      const int8x16x4_t xa = SQ_LD4_S8(a), bw = SQ_LD4_S8(w);
      const int8x16_t x[4] = {xa.val[0], xa.val[1], xa.val[2], xa.val[3]};
      const int8x16_t b[4] = {bw.val[0], bw.val[1], bw.val[2], bw.val[3]};
      SQ_SMULL_BLOCK(4)
    }
  } else {
    for (size_t k = 0; k < kp; k += 16, a += a_step, w += 64) {
      int8x16_t x[4], b[4];
      _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) x[r] = vld1q_s8(a + 16 * r);
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) b[j] = vld1q_s8(w + 16 * j);
      _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
          acc[r][j] = vpadalq_s16(acc[r][j], vmull_s8(vget_low_s8(x[r]), vget_low_s8(b[j])));
          acc[r][j] = vpadalq_s16(acc[r][j], vmull_high_s8(x[r], b[j]));
        }
    }
  }
  int32x4_t rows[4][2];
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
    rows[r][0] = vpaddq_s32(vpaddq_s32(acc[r][0], acc[r][1]), vpaddq_s32(acc[r][2], acc[r][3]));
  sq_store_rows_nv(R, 1, t, nc, rows);
}

SQ_ALWAYS_INLINE void run(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const sq_out *o) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const int8_t *a = lhs;
  for (size_t p = 0; p < n; p += kNR) {
    const int8_t *w = (const int8_t *)rhs + p * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    for (size_t i0 = 0; i0 < m; i0 += kMR) {
      const size_t R = m - i0 < kMR ? m - i0 : kMR;
      const sq_out t = sq_out_at(o, i0, p), d = nc == kNR ? t : sq_out_tail(&t);
      const int8_t *blk = a + i0 * kp;
      size_t r = 0;
      if (R == 4) { tile(4, kp, blk, 64, w, &d, nc); r = 4; }
      for (; r < R; r++) {
        const sq_out dr = sq_out_at(&d, r, 0);
        tile(1, kp, blk + 16 * r, 16 * R, w, &dr, nc);
      }
      if (nc < kNR) sq_flush_tail(&t, R, nc);
    }
  }
}

void squat_gemm_qs8_qs8_4x4c8__neon(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                     int32_t *c, size_t cs, void *scratch) {
  const sq_out o = sq_out_int(c, cs, scratch);
  run(m, n, k, lhs, rhs, &o);
}
static void run_dequant(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const squat_dequant *dq,
                        float *y, size_t ys, void *scratch) {
  const sq_out o = sq_out_dequant(dq, y, ys, scratch);
  run(m, n, k, lhs, rhs, &o);
}

const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs8_4x4c8_neon = {
  .name = "gemm_qs8_qs8_4x4c8_neon",
  .precision = "w8a8",
  .weight_bits = 8,
  .act_bits = 8,
  .features = SQUAT_FEAT_NEON,
  .get_mr = get_mr,
  .get_nr = get_nr,
  .get_kr = get_kr,
  .get_rhs_packed_size = rhs_size,
  .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size,
  .pack_lhs = pack_lhs,
  .get_scratch_size = scratch_size,
  .run_matmul = squat_gemm_qs8_qs8_4x4c8__neon,
  .rhs_layout = SQUAT_LAYOUT_QS8_C16_NR4,
  .pack_lhs_quant = pack_lhs_quant,
  .run_dequant = run_dequant,
};
