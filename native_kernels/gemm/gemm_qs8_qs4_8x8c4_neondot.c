/// W4 weights (two per byte), int8 activations on the sdot path, prefill (W4A8, and W4A4: activations in [-8,7]
/// are valid int8; sdot gives 4-bit operands no extra throughput). Each 8-column panel is unpacked once per call
/// into scratch (3 instructions per 32 weights, amortised over all M rows), then the W8A8 register tile runs on
/// it: 70 instructions per 1024 MACs in the inner loop. Decode (M = 1) reads the same packed weights in place:
/// gemm_qs8_qs4_1x8c4_neondot, gemm_qs4_qs4_1x8c4_neondot.
/// Packers: pack_rhs_qs4_nxk_c4 (RHS), pack_lhs_qs8_blocked / pack_lhs_quant_blocked (LHS: 8-row blocks, kc 16).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_qs8_qs4_8x8c4_neondot needs __ARM_FEATURE_DOTPROD (-march=armv8.2-a+dotprod)"
#endif
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_qs8_c4_8x8_neondot.h"

static const size_t kMR = 8, kNR = 8, kKR = 4, kKB = 32;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) / kNR * (32 + SQ_ROUND_UP(k, kKB) * 4); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs4_nxk_c4(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_blocked(16, kMR, 0, SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static void pack_lhs_quant(size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, void *out) {
  pack_lhs_quant_blocked(16, kMR, 0, SQ_ROUND_UP(k, kKB), m, k, x, xs, rows, out);
}
/* 8 x 8 tail tile, then one unpacked int8 panel */
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; return 256 + kNR * SQ_ROUND_UP(k, kKB); }

void squat_gemm_qs8_qs4_8x8c4__neondot(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                        int32_t *c, size_t cs, void *scratch) {
  const sq_out o = sq_out_int(c, cs, scratch);
  sq_c4_run(1, m, n, SQ_ROUND_UP(k, kKB), lhs, rhs, (int8_t *)scratch + 256, &o);
}
static void run_dequant(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, const squat_dequant *dq,
                        float *y, size_t ys, void *scratch) {
  const sq_out o = sq_out_dequant(dq, y, ys, scratch);
  sq_c4_run(1, m, n, SQ_ROUND_UP(k, kKB), lhs, rhs, (int8_t *)scratch + 256, &o);
}

const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs4_8x8c4_neondot = {
  .name = "gemm_qs8_qs4_8x8c4_neondot",
  .precision = "w4a8",
  .weight_bits = 4,
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
  .run_matmul = squat_gemm_qs8_qs4_8x8c4__neondot,
  .rhs_layout = SQUAT_LAYOUT_QS4_C4,
  .pack_lhs_quant = pack_lhs_quant,
  .run_dequant = run_dequant,
};
