/// W4A4 with the MKMP scheme (the paper's packed 16-bit-lane multiplier). MR=4, NR=8 (4 lanes of column pairs),
/// K block 16 (field split after every block). Plain NEON (smull/smlal/ssra/srsra), no dotprod needed.
/// Activations must be in [-8, 7]. Packers: pack_rhs_qs4x2_mkmp_nxk (RHS), pack_lhs_qs16_rows (LHS).
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_mkmp_4x8_neon.h"

static const size_t kMR = 4, kNR = 8, kKR = 1, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB); /* int16 per 2 weights */ }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs4x2_mkmp_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 2; }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs16_rows(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 0; }

SQ_ALWAYS_INLINE void tile(const int R, size_t kp, const int16_t *a, const int16_t *w, int32_t *c, size_t cs, size_t nc) {
  int32x4_t lo[4], hi[4];
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) lo[r] = hi[r] = vdupq_n_s32(0);
  sq_mkmp_pass(R, 0, kp, a, kp, w, lo, hi);
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) sq_mkmp_store(c + r * cs, nc, lo[r], hi[r]);
}

void squat_gemm_qs4_qs4x2_mkmp_4x8__neon(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                          int32_t *c, size_t cs, void *scratch) {
  (void)scratch;
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const int16_t *a = lhs;
  for (size_t p = 0; p < n; p += kNR) {
    const int16_t *w = (const int16_t *)rhs + p / 2 * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    size_t i = 0;
    for (; i + 4 <= m; i += 4) tile(4, kp, a + i * kp, w, c + i * cs + p, cs, nc);
    for (; i < m; i++) tile(1, kp, a + i * kp, w, c + i * cs + p, cs, nc);
  }
}

const squat_igemm_ukernel squat_ukernel_gemm_qs4_qs4x2_mkmp_4x8_neon = {
  .name = "gemm_qs4_qs4x2_mkmp_4x8_neon",
  .precision = "w4a4",
  .weight_bits = 4,
  .act_bits = 4,
  .features = SQUAT_FEAT_NEON,
  .get_mr = get_mr,
  .get_nr = get_nr,
  .get_kr = get_kr,
  .get_rhs_packed_size = rhs_size,
  .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size,
  .pack_lhs = pack_lhs,
  .get_scratch_size = scratch_size,
  .run_matmul = squat_gemm_qs4_qs4x2_mkmp_4x8__neon,
  .rhs_layout = SQUAT_LAYOUT_QS4X2_MKMP,
};
