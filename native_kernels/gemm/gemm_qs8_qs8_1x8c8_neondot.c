/// W8A8 decode (M = 1) GEMV on the smmla kernel's packed weights (pack_rhs_qs8_nxk_c8x2: per 8 k, column pairs
/// of 2 x 8 bytes), so a core with i8mm packs once for prefill and decode. smmla would waste half its work on a
/// zero second row, so this kernel uses plain sdot: each weight vector [col 2j k0-7 | col 2j+1 k0-7] against the
/// activation chunk doubled [x k0-7 | x k0-7] (pack_lhs_qs8_rows_dup8) gives four partial sums per column pair,
/// reduced once at the end with addp. Four panels at a time, 32 k per loop iteration: 1 activation + 16 weight
/// loads + 64 sdot + 2 = 83 instructions per 1024 MACs. Needs only dotprod.
/// Packers: pack_rhs_qs8_nxk_c8x2 (RHS, as gemm_qs8_qs8_8x8c8_neoni8mm), pack_lhs_qs8_rows_dup8 (LHS).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_qs8_qs8_1x8c8_neondot needs __ARM_FEATURE_DOTPROD (-march=armv8.2-a+dotprod)"
#endif
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_ops.h"
#include "tile_store.h"

static const size_t kMR = 1, kNR = 8, kKR = 8, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs8_nxk_c8x2(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * 2 * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_rows_dup8(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static void pack_lhs_quant(size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, void *out) {
  pack_lhs_quant_rows_dup8(SQ_ROUND_UP(k, kKB), m, k, x, xs, rows, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 512; /* tail buffer of sq_store_cols */ }

/* One 8-k chunk X (doubled) against panel q's four column-pair vectors. */
#define SQ_C8_X(P, X)                                                                      \
  {                                                                                        \
    _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {                                  \
      const int8x16x4_t b = SQ_LD4_S8(wq[q]);                                              \
      SQ_SDOT(acc[q][0], b.val[0], X); SQ_SDOT(acc[q][1], b.val[1], X);                    \
      SQ_SDOT(acc[q][2], b.val[2], X); SQ_SDOT(acc[q][3], b.val[3], X);                    \
    }                                                                                      \
  }

SQ_ALWAYS_INLINE void gemv(const int P, size_t kp, const int8_t *a, const int8_t *w0, const sq_out *o, size_t i,
                           size_t p, size_t nc) {
  const int8_t *wq[4];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) wq[q] = w0 + q * 8 * kp;
  int32x4_t acc[4][4];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) acc[q][0] = acc[q][1] = acc[q][2] = acc[q][3] = vdupq_n_s32(0);
  for (size_t kb = SQ_GV_UNROLL ? kp / 32 : 0; kb; kb--) {
    const int8x16x4_t x = SQ_LD4_S8(a);
    SQ_C8_X(P, x.val[0]) SQ_C8_X(P, x.val[1]) SQ_C8_X(P, x.val[2]) SQ_C8_X(P, x.val[3])
  }
  for (size_t kb = (SQ_GV_UNROLL ? kp % 32 : kp) / 16; kb; kb--) {
    const int8x16x2_t x = SQ_LD2_S8(a);
    SQ_C8_X(P, x.val[0]) SQ_C8_X(P, x.val[1])
  }
  /* acc[q][j] = [col 2j k0-3, col 2j k4-7, col 2j+1 k0-3, col 2j+1 k4-7] summed over K */
  int32x4_t v[4][2];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    v[q][0] = vpaddq_s32(acc[q][0], acc[q][1]);
    v[q][1] = vpaddq_s32(acc[q][2], acc[q][3]);
  }
  sq_store_cols(2 * P, o, i, p, nc, v);
}

SQ_ALWAYS_INLINE void run(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const sq_out *o) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const int8_t *w = rhs;
  for (size_t i = 0; i < m; i++) {
    const int8_t *a = (const int8_t *)lhs + i * 2 * kp;
    size_t p = 0;
    for (; p + 32 <= n; p += 32) gemv(4, kp, a, w + p * kp, o, i, p, 32);
    for (; p < n; p += 8) gemv(1, kp, a, w + p * kp, o, i, p, n - p < 8 ? n - p : 8);
  }
}

void squat_gemm_qs8_qs8_1x8c8__neondot(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, int32_t *c,
                                        size_t cs, void *scratch) {
  const sq_out o = sq_out_int(c, cs, scratch);
  run(m, n, k, lhs, rhs, &o);
}
static void run_dequant(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const squat_dequant *dq,
                        float *y, size_t ys, void *scratch) {
  const sq_out o = sq_out_dequant(dq, y, ys, scratch);
  run(m, n, k, lhs, rhs, &o);
}

const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs8_1x8c8_neondot = {
  .name = "gemm_qs8_qs8_1x8c8_neondot",
  .precision = "w8a8",
  .weight_bits = 8,
  .act_bits = 8,
  .features = SQUAT_FEAT_NEON | SQUAT_FEAT_DOTPROD,
  .get_mr = get_mr,
  .get_nr = get_nr,
  .get_kr = get_kr,
  .get_rhs_packed_size = rhs_size,
  .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size,
  .pack_lhs = pack_lhs,
  .get_scratch_size = scratch_size,
  .run_matmul = squat_gemm_qs8_qs8_1x8c8__neondot,
  .rhs_layout = SQUAT_LAYOUT_QS8_C8,
  .pack_lhs_quant = pack_lhs_quant,
  .run_dequant = run_dequant,
};
