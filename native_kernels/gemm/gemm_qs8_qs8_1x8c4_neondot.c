/// W8A8 decode (M = 1) GEMV on the 8x8c4 kernel's packed weights (pack_rhs_qs8_nxk_c4), so one packing serves
/// prefill and decode: sdot by element, two panels at a time, 83 instructions per 1024 MACs in the inner loop
/// (tile_gemv_c4_neondot.h). Packers: pack_rhs_qs8_nxk_c4 (RHS), pack_lhs_qs8_blocked with one-row blocks (rows).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_qs8_qs8_1x8c4_neondot needs __ARM_FEATURE_DOTPROD (-march=armv8.2-a+dotprod)"
#endif
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_gemv_c4_neondot.h"

static const size_t kMR = 1, kNR = 8, kKR = 4, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t panel_bytes(size_t kp) { return kNR * kp; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) / kNR * panel_bytes(SQ_ROUND_UP(k, kKB)); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs8_nxk_c4(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_blocked(16, 1, 0, SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static void pack_lhs_quant(size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, void *out) {
  pack_lhs_quant_blocked(16, 1, 0, SQ_ROUND_UP(k, kKB), m, k, x, xs, rows, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 512; /* tail buffer of sq_store_cols */ }

void squat_gemm_qs8_qs8_1x8c4__neondot(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, int32_t *c, size_t cs, void *scratch) {
  const sq_out o = sq_out_int(c, cs, scratch);
  const size_t kp = SQ_ROUND_UP(k, kKB);
  sq_gv_c4_run(SQ_GV_W8, m, n, kp, lhs, rhs, panel_bytes(kp), 0, &o);
}
static void run_dequant(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const squat_dequant *dq,
                        float *y, size_t ys, void *scratch) {
  const sq_out o = sq_out_dequant(dq, y, ys, scratch);
  const size_t kp = SQ_ROUND_UP(k, kKB);
  sq_gv_c4_run(SQ_GV_W8, m, n, kp, lhs, rhs, panel_bytes(kp), 0, &o);
}

const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs8_1x8c4_neondot = {
  .name = "gemm_qs8_qs8_1x8c4_neondot",
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
  .run_matmul = squat_gemm_qs8_qs8_1x8c4__neondot,
  .rhs_layout = SQUAT_LAYOUT_QS8_C4,
  .max_k = 0,
  .pack_lhs_quant = pack_lhs_quant,
  .run_dequant = run_dequant,
};
