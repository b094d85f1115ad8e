/// W8A8 fallback for cores without dotprod: smull (8 int8 products -> int16, |p| <= 2^14 so no int16 overflow)
/// then sadalp (pairwise add-accumulate into int32). MR=4, NR=4, KR=8. 4 MACs per instruction.
/// Packers: pack_rhs_qs8_nxk_c8 (RHS), pack_lhs_qs8_rows (LHS).
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_store.h"

static const size_t kMR = 4, kNR = 4, kKR = 8, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB); }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs8_nxk_c8(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_rows(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; (void)k; return 0; }

SQ_ALWAYS_INLINE void tile(const int R, size_t kp, const int8_t *a, const int8_t *w, int32_t *c, size_t cs, size_t nc) {
  int32x4_t acc[4][4];
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = vdupq_n_s32(0);
  for (size_t k = 0; k < kp; k += 8) {
    int8x8_t x[4], b[4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) x[r] = vld1_s8(a + r * kp + k);
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) b[j] = vld1_s8(w + 8 * j);
    w += 32;
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) acc[r][j] = vpadalq_s16(acc[r][j], vmull_s8(x[r], b[j]));
  }
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
    const int32x4_t s = vpaddq_s32(vpaddq_s32(acc[r][0], acc[r][1]), vpaddq_s32(acc[r][2], acc[r][3]));
    sq_store_s32x4(c + r * cs, nc, s);
  }
}

void squat_gemm_qs8_qs8_4x4c8__neon(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                     int32_t *c, size_t cs, void *scratch) {
  (void)scratch;
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const int8_t *a = lhs;
  for (size_t p = 0; p < n; p += kNR) {
    const int8_t *w = (const int8_t *)rhs + p * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    size_t i = 0;
    for (; i + 4 <= m; i += 4) tile(4, kp, a + i * kp, w, c + i * cs + p, cs, nc);
    for (; i < m; i++) tile(1, kp, a + i * kp, w, c + i * cs + p, cs, nc);
  }
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
  .rhs_layout = SQUAT_LAYOUT_QS8_C8_NR4,
};
