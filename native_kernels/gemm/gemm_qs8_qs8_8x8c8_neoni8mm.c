/// W8A8 on the int8 matrix-multiply path (FEAT_I8MM, smmla), prefill: MR=8 (4 row pairs), NR=8 (4 column
/// pairs), KR=8; 38 instructions per 1024 MACs in the inner loop (tile_qs8_c8x2_8x8_neoni8mm.h). Decode reads
/// the same packed weights with plain sdot: gemm_qs8_qs8_1x8c8_neondot.
/// Packers: pack_rhs_qs8_nxk_c8x2 (RHS), pack_lhs_qs8_blocked / pack_lhs_quant_blocked (LHS: kc 8, row pairs).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_MATMUL_INT8)
#error "gemm_qs8_qs8_8x8c8_neoni8mm needs __ARM_FEATURE_MATMUL_INT8 (-march=armv8.2-a+i8mm)"
#endif
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_qs8_c8x2_8x8_neoni8mm.h"

static const size_t kMR = 8, kNR = 8, kKR = 8, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs8_nxk_c8x2(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return SQ_ROUND_UP(m, 2) * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_blocked(8, kMR, 1, SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static void pack_lhs_quant(size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, void *out) {
  pack_lhs_quant_blocked(8, kMR, 1, SQ_ROUND_UP(k, kKB), m, k, x, xs, rows, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 256; /* tail tile */ }

void squat_gemm_qs8_qs8_8x8c8__neoni8mm(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                         int32_t *c, size_t cs, void *scratch) {
  const sq_out o = sq_out_int(c, cs, scratch);
  sq_mm_run(0, m, n, SQ_ROUND_UP(k, kKB), lhs, rhs, NULL, &o);
}
static void run_dequant(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const squat_dequant *dq,
                        float *y, size_t ys, void *scratch) {
  const sq_out o = sq_out_dequant(dq, y, ys, scratch);
  sq_mm_run(0, m, n, SQ_ROUND_UP(k, kKB), lhs, rhs, NULL, &o);
}

const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs8_8x8c8_neoni8mm = {
  .name = "gemm_qs8_qs8_8x8c8_neoni8mm",
  .precision = "w8a8",
  .weight_bits = 8,
  .act_bits = 8,
  .features = SQUAT_FEAT_NEON | SQUAT_FEAT_I8MM,
  .get_mr = get_mr,
  .get_nr = get_nr,
  .get_kr = get_kr,
  .get_rhs_packed_size = rhs_size,
  .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size,
  .pack_lhs = pack_lhs,
  .get_scratch_size = scratch_size,
  .run_matmul = squat_gemm_qs8_qs8_8x8c8__neoni8mm,
  .rhs_layout = SQUAT_LAYOUT_QS8_C8,
  .pack_lhs_quant = pack_lhs_quant,
  .run_dequant = run_dequant,
};
