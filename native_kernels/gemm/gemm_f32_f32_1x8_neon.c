/// FP32 decode (M = 1) GEMV on the 8x8 kernel's packed weights ([N/8][Kp][8]). fmla .4s by element; four 8-column
/// panels at a time (eight accumulator chains, each column one fma per k in ascending k, as ref_gemm_f32),
/// 16 k per loop iteration: 128 fmla + 32 weight loads (ld1 of four) + 1 activation load + subs + b.ne = 163 instructions per 512 MACs.
/// M > 1 runs row by row (each row streams the weights again).
/// Packers: pack_rhs_f32_nxk (RHS, as the prefill kernel), pack_lhs_f32_rows (LHS).
#include "squat_fgemm_interface.h"
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_ops.h"
#include "tile_f32.h"

static const size_t kMR = 1, kNR = 8, kKR = 1, kKB = 4;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) * 4; }
static void pack_rhs(size_t n, size_t k, const void *w, size_t ws, void *out) {
  pack_rhs_f32_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 4; }
static void pack_lhs(size_t m, size_t k, const void *x, size_t xs, void *out) {
  pack_lhs_f32_rows(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}

/* Two k (lanes L, L + 1 of activation vector V) of P panels: one ld1 of four registers holds panel q's two weight
   vectors of each k; loaded right before its four fmla, so one tuple is live at a time. */
#define SQ_GV_K2(P, V, L)                                                       \
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {                         \
    const float32x4x4_t w4 = SQ_LD4_F32(wq[q]);                                              \
    SQ_FMLA_F32_LANE(acc[q][0], w4.val[0], V, L);                                           \
    SQ_FMLA_F32_LANE(acc[q][1], w4.val[1], V, L);                                           \
    SQ_FMLA_F32_LANE(acc[q][0], w4.val[2], V, (L) + 1);                                     \
    SQ_FMLA_F32_LANE(acc[q][1], w4.val[3], V, (L) + 1);                                     \
  }
#define SQ_GV_KV(P, V) SQ_GV_K2(P, V, 0) SQ_GV_K2(P, V, 2)

/* One row x P (1..4) panels of 8 columns starting at panel w0 (panels kp * 8 elements apart). */
SQ_ALWAYS_INLINE void gemv(const int P, size_t kp, const float *a, const float *w0, float *c, size_t nc) {
  const float *wq[4];
  float32x4_t acc[4][2];
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    wq[q] = w0 + q * kp * 8;
    acc[q][0] = acc[q][1] = vdupq_n_f32(0.0f);
  }
  size_t kb = SQ_GV_UNROLL ? kp / 16 : 0;
  for (; kb; kb--) {
    const float32x4x4_t x = SQ_LD4_F32(a);
    SQ_GV_KV(P, x.val[0]) SQ_GV_KV(P, x.val[1]) SQ_GV_KV(P, x.val[2]) SQ_GV_KV(P, x.val[3])
  }
  for (kb = (SQ_GV_UNROLL ? kp % 16 : kp) / 4; kb; kb--) {
    const float32x4_t x = ({ const float32x4_t v_ = vld1q_f32(a); a += 4; v_; });
    SQ_GV_KV(P, x)
  }
  _Pragma("GCC unroll 4") for (int q = 0; q < P; q++) {
    const size_t done = (size_t)q * 8;
    if (done < nc) sq_f32_store_rows(1, &acc[q], c + done, 0, nc - done < 8 ? nc - done : 8);
  }
}

void squat_gemm_f32_f32_1x8__neon(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, void *cv, size_t cs) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const float *w = rhs;
  for (size_t i = 0; i < m; i++) {
    const float *a = (const float *)lhs + i * kp;
    float *c = (float *)cv + i * cs;
    size_t p = 0;
    for (; p + 4 * kNR <= n; p += 4 * kNR) gemv(4, kp, a, w + p * kp, c + p, 4 * kNR);
    for (; p < n; p += kNR) gemv(1, kp, a, w + p * kp, c + p, n - p < kNR ? n - p : kNR);
  }
}

const squat_fgemm_ukernel squat_ukernel_gemm_f32_f32_1x8_neon = {
  .name = "gemm_f32_f32_1x8_neon", .precision = "fp32", .elem_size = 4, .features = SQUAT_FEAT_NEON,
  .get_mr = get_mr, .get_nr = get_nr, .get_kr = get_kr, .get_rhs_packed_size = rhs_size, .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size, .pack_lhs = pack_lhs, .run_matmul = squat_gemm_f32_f32_1x8__neon,
  .rhs_layout = SQUAT_FLAYOUT_F32_NR8,
};
