/// W4A8 with the MKMP scheme. An 8-bit activation does not fit the 11-bit low field for even two k
/// (w*x spans 2041 values), so each activation is split into two signed nibbles, x = 16*hi + lo + 8 with
/// hi = x >> 4 and lo = (x & 15) - 8, both in [-8,7]; the W4A4 MKMP pass runs on each (half the W4A4 rate),
/// and 8 * rowsum(W) (stored in the packed panel) restores the offset. Low fields of the hi pass are
/// accumulated x16 for free (ssra #17 instead of #21). MR=4, NR=8, K block 16.
/// Packers: pack_rhs_qs4x2_mkmp_rsum_nxk (RHS), pack_lhs_qs16_nibsplit (LHS).
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_mkmp_4x8_neon.h"

static const size_t kMR = 4, kNR = 8, kKR = 1, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t panel_bytes(size_t kp) { return kNR * 4 + kp * kNR * 2; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) / kNR * panel_bytes(SQ_ROUND_UP(k, kKB)); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs4x2_mkmp_rsum_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 4; }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs16_nibsplit(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 0; }

SQ_ALWAYS_INLINE void tile(const int R, size_t kp, const int16_t *a, const int32_t *rs, const int16_t *w, int32_t *c, size_t cs, size_t nc) {
  int32x4_t lo[4], hi_hi[4], hi_lo[4];
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) lo[r] = hi_hi[r] = hi_lo[r] = vdupq_n_s32(0);
  sq_mkmp_pass(R, 1, kp, a, 2 * kp, w, lo, hi_hi);      /* high nibbles: low fields land x16 */
  sq_mkmp_pass(R, 0, kp, a + kp, 2 * kp, w, lo, hi_lo); /* low nibbles */
  const int32x4_t rs0 = vld1q_s32(rs), rs1 = vld1q_s32(rs + 4);
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
    const int32x4_t a = vnegq_s32(lo[r]), b = vnegq_s32(vaddq_s32(hi_lo[r], vshlq_n_s32(hi_hi[r], 4)));
    sq_store_s32x8(c + r * cs, nc, vaddq_s32(vzip1q_s32(a, b), rs0), vaddq_s32(vzip2q_s32(a, b), rs1));
  }
}

void squat_gemm_qs8_qs4x2_mkmp_4x8__neon(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                          int32_t *c, size_t cs, void *scratch) {
  (void)scratch;
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const int16_t *a = lhs;
  for (size_t p = 0; p < n; p += kNR) {
    const uint8_t *panel = (const uint8_t *)rhs + p / kNR * panel_bytes(kp);
    const int32_t *rs = (const int32_t *)panel;
    const int16_t *w = (const int16_t *)(panel + kNR * 4);
    const size_t nc = n - p < kNR ? n - p : kNR;
    size_t i = 0;
    for (; i + 4 <= m; i += 4) tile(4, kp, a + i * 2 * kp, rs, w, c + i * cs + p, cs, nc);
    for (; i < m; i++) tile(1, kp, a + i * 2 * kp, rs, w, c + i * cs + p, cs, nc);
  }
}

const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs4x2_mkmp_4x8_neon = {
  .name = "gemm_qs8_qs4x2_mkmp_4x8_neon",
  .precision = "w4a8",
  .weight_bits = 4,
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
  .run_matmul = squat_gemm_qs8_qs4x2_mkmp_4x8__neon,
  .rhs_layout = SQUAT_LAYOUT_QS4X2_MKMP_RSUM,
};
