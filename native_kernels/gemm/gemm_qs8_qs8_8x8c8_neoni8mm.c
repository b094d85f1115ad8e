/// W8A8 on the int8 matrix-multiply path (FEAT_I8MM, smmla): MR=8 (4 row pairs), NR=8 (4 column pairs), KR=8.
/// Packers: pack_rhs_qs8_nxk_c8x2 (RHS), pack_lhs_qs8_rowpairs_c8 (LHS).
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
  pack_lhs_qs8_rowpairs_c8(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 0; }

SQ_ALWAYS_INLINE void tile(const int P, size_t kp, const int8_t *a, const int8_t *w, int32_t *c, size_t cs,
                           size_t nrows, size_t ncols) {
  int32x4_t acc[4][4];
  _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) acc[p][0] = acc[p][1] = acc[p][2] = acc[p][3] = vdupq_n_s32(0);
  for (size_t k = 0; k < kp; k += 8) {
    int8x16_t x[4];
    _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) x[p] = vld1q_s8(a + p * 2 * kp + 2 * k);
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
      const int8x16_t b = vld1q_s8(w + 16 * j);
      _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) acc[p][j] = vmmlaq_s32(acc[p][j], x[p], b);
    }
    w += 64;
  }
  _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) {
    if (nrows <= (size_t)(2 * p)) break;
    sq_store_mmla_pair(acc[p], c + 2 * p * cs, cs, nrows - 2 * p, ncols);
  }
}

void squat_gemm_qs8_qs8_8x8c8__neoni8mm(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                         int32_t *c, size_t cs, void *scratch) {
  (void)scratch;
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const int8_t *a = lhs;
  for (size_t p = 0; p < n; p += kNR) {
    const int8_t *w = (const int8_t *)rhs + p * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    size_t i = 0;
    for (; i + 8 <= m; i += 8) tile(4, kp, a + i * kp, w, c + i * cs + p, cs, 8, nc);
    if (i + 4 <= m) { tile(2, kp, a + i * kp, w, c + i * cs + p, cs, 4, nc); i += 4; }
    for (; i < m; i += 2) tile(1, kp, a + i * kp, w, c + i * cs + p, cs, m - i, nc);
  }
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
};
