/// FP16 decode (M = 1) GEMV on the 8x16 kernel's packed weights ([N/16][Kp][16]), so one packing serves prefill
/// and decode. fmla .8h by element; four 16-column panels at a time (eight independent accumulator chains, each
/// column still one fma per k in ascending k, the order ref_gemm_f16 uses; one activation load per 64 columns),
/// 32 k per loop iteration: 256 fmla + 64 weight loads (ld1 of four registers) + 1 activation load + subs + b.ne = 323 instructions per 2048 MACs.
/// M > 1 runs row by row (each row streams the weights again).
/// Packers: pack_rhs_f16_nxk (RHS, as the prefill kernel), pack_lhs_f16_rows (LHS).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
#error "gemm_f16_f16_1x16_neonfp16arith needs __ARM_FEATURE_FP16_VECTOR_ARITHMETIC (-march=armv8.2-a+fp16)"
#endif
#include "squat_fgemm_interface.h"
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_ops.h"
#include "tile_f16.h"

static const size_t kMR = 1, kNR = 16, kKR = 1, kKB = 8;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) * 2; }
static void pack_rhs(size_t n, size_t k, const void *w, size_t ws, void *out) {
  pack_rhs_f16_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 2; }
static void pack_lhs(size_t m, size_t k, const void *x, size_t xs, void *out) {
  pack_lhs_f16_rows(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}

/* Two k (lanes L, L + 1 of activation vector V) of P panels: one ld1 of four registers holds panel q's two weight
   vectors of each k; loaded right before its four fmla, so one tuple is live at a time. */
#define SQ_GV_K2(P, V, L)                                                       \
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {                         \
    const float16x8x4_t w4 = SQ_LD4_F16(wq[q]);                                              \
    SQ_FMLA_F16_LANE(acc[q][0], w4.val[0], V, L);                                           \
    SQ_FMLA_F16_LANE(acc[q][1], w4.val[1], V, L);                                           \
    SQ_FMLA_F16_LANE(acc[q][0], w4.val[2], V, (L) + 1);                                     \
    SQ_FMLA_F16_LANE(acc[q][1], w4.val[3], V, (L) + 1);                                     \
  }
#define SQ_GV_KV(P, V) SQ_GV_K2(P, V, 0) SQ_GV_K2(P, V, 2) SQ_GV_K2(P, V, 4) SQ_GV_K2(P, V, 6)

/* One row x P (1..4) panels of 16 columns starting at panel w0 (panels kp * 16 elements apart). */
SQ_ALWAYS_INLINE void gemv(const int P, size_t kp, const sq_f16_t *a, const sq_f16_t *w0, uint16_t *c, size_t nc) {
  const sq_f16_t *wq[4];
  float16x8_t acc[4][2];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    wq[q] = w0 + q * kp * 16;
    acc[q][0] = acc[q][1] = vreinterpretq_f16_u16(vdupq_n_u16(0));
  }
  size_t kb = SQ_GV_UNROLL ? kp / 32 : 0;
  for (; kb; kb--) {
    const float16x8x4_t x = SQ_LD4_F16(a);
    SQ_GV_KV(P, x.val[0]) SQ_GV_KV(P, x.val[1]) SQ_GV_KV(P, x.val[2]) SQ_GV_KV(P, x.val[3])
  }
  for (kb = (SQ_GV_UNROLL ? kp % 32 : kp) / 8; kb; kb--) {
    const float16x8_t x = SQ_LD1_F16(a);
    SQ_GV_KV(P, x)
  }
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    const size_t done = (size_t)q * 16;
    if (done < nc) sq_f16_store_rows(1, &acc[q], c + done, 0, nc - done < 16 ? nc - done : 16);
  }
}

void squat_gemm_f16_f16_1x16__neonfp16arith(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, void *cv, size_t cs) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const sq_f16_t *w = rhs;
  for (size_t i = 0; i < m; i++) {
    const sq_f16_t *a = (const sq_f16_t *)lhs + i * kp;
    uint16_t *c = (uint16_t *)cv + i * cs;
    size_t p = 0;
    for (; p + 4 * kNR <= n; p += 4 * kNR) gemv(4, kp, a, w + p * kp, c + p, 4 * kNR);
    for (; p < n; p += kNR) gemv(1, kp, a, w + p * kp, c + p, n - p < kNR ? n - p : kNR);
  }
}

const squat_fgemm_ukernel squat_ukernel_gemm_f16_f16_1x16_neonfp16arith = {
  .name = "gemm_f16_f16_1x16_neonfp16arith", .precision = "fp16", .elem_size = 2, .features = SQUAT_FEAT_NEON | SQUAT_FEAT_FP16,
  .get_mr = get_mr, .get_nr = get_nr, .get_kr = get_kr, .get_rhs_packed_size = rhs_size, .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size, .pack_lhs = pack_lhs, .run_matmul = squat_gemm_f16_f16_1x16__neonfp16arith,
  .rhs_layout = SQUAT_FLAYOUT_F16_NR16,
};
