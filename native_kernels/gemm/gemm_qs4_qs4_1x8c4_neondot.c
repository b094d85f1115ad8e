/// W4A4 decode (M = 1) GEMV reading the shared 4-bit layout (pack_rhs_qs4_nxk_c4) in place with one unpack
/// instruction per 32 weights: sdot(p, y) + sdot(p & 15, z) with y = x_hi and z = 16 x_lo - x_hi + 7 prepared per
/// token by pack_lhs_qs8_q4yz (activations must lie in [-8, 7]); 59 instructions per 512 MACs in the inner loop
/// (tile_gemv_c4_neondot.h). Exact while |16 C| < 2^31, guaranteed for K <= 2^20 (max_k; squat_qlinear_kernel
/// picks gemm_qs8_qs4_1x8c4_neondot beyond). Packers: pack_rhs_qs4_nxk_c4, pack_lhs_qs8_q4yz.
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_qs4_qs4_1x8c4_neondot needs __ARM_FEATURE_DOTPROD (-march=armv8.2-a+dotprod)"
#endif
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_gemv_c4_neondot.h"

static const size_t kMR = 1, kNR = 8, kKR = 4, kKB = 32;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t panel_bytes(size_t kp) { return 32 + kp * 4; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) / kNR * panel_bytes(SQ_ROUND_UP(k, kKB)); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs4_nxk_c4(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return pack_lhs_q4_head_bytes(m) + m * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_q4yz(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static void pack_lhs_quant(size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, void *out) {
  pack_lhs_quant_q4yz(SQ_ROUND_UP(k, kKB), m, k, x, xs, rows, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 512; /* tail buffer of sq_store_cols */ }

void squat_gemm_qs4_qs4_1x8c4__neondot(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, int32_t *c, size_t cs, void *scratch) {
  const sq_out o = sq_out_int(c, cs, scratch);
  const size_t kp = SQ_ROUND_UP(k, kKB);
  sq_gv_c4_run(SQ_GV_Q4YZ, m, n, kp, lhs, rhs, panel_bytes(kp), 32, &o);
}
static void run_dequant(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const squat_dequant *dq,
                        float *y, size_t ys, void *scratch) {
  const sq_out o = sq_out_dequant(dq, y, ys, scratch);
  const size_t kp = SQ_ROUND_UP(k, kKB);
  sq_gv_c4_run(SQ_GV_Q4YZ, m, n, kp, lhs, rhs, panel_bytes(kp), 32, &o);
}

const squat_igemm_ukernel squat_ukernel_gemm_qs4_qs4_1x8c4_neondot = {
  .name = "gemm_qs4_qs4_1x8c4_neondot",
  .precision = "w4a4",
  .weight_bits = 4,
  .act_bits = 4,
  .features = SQUAT_FEAT_NEON | SQUAT_FEAT_DOTPROD,
  .get_mr = get_mr,
  .get_nr = get_nr,
  .get_kr = get_kr,
  .get_rhs_packed_size = rhs_size,
  .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size,
  .pack_lhs = pack_lhs,
  .get_scratch_size = scratch_size,
  .run_matmul = squat_gemm_qs4_qs4_1x8c4__neondot,
  .rhs_layout = SQUAT_LAYOUT_QS4_C4,
  .max_k = (size_t)1 << 20,
  .pack_lhs_quant = pack_lhs_quant,
  .run_dequant = run_dequant,
};
