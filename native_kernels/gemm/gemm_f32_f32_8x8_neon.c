/// FP32 baseline, prefill: fmla .4s by element (4 MACs per instruction), MR=8, NR=8, K block 4.
/// Registers: 16 accumulators + 8 activation vectors + 4 weight vectors (one ld1 of four per two k) = 28.
/// Per K block of 4: 64 fmla + 2 activation loads + 2 weight loads + subs + b.ne = 70 instructions per 256 MACs
/// (280 per 1024). Inner loop in squat_ops.h instructions; remainder tiles (R < 8 rows) in plain intrinsics.
/// Packers: pack_rhs_f32_nxk (RHS [N/8][Kp][8]), pack_lhs_blocked (LHS: 8-row blocks, 4-element chunks).
#include "squat_fgemm_interface.h"
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_ops.h"
#include "tile_f32.h"

static const size_t kMR = 8, kNR = 8, kKR = 1, kKB = 4;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) * 4; }
static void pack_rhs(size_t n, size_t k, const void *w, size_t ws, void *out) {
  pack_rhs_f32_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 4; }
static void pack_lhs(size_t m, size_t k, const void *x, size_t xs, void *out) {
  pack_lhs_blocked(4, kMR, kKB, SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}

#define SQ_F32_K8(W0, W1, L)                                                                   \
  _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {                                        \
    SQ_FMLA_F32_LANE(acc[r][0], W0, x[r], L);                                                  \
    SQ_FMLA_F32_LANE(acc[r][1], W1, x[r], L);                                                  \
  }

/* 8 rows x 8 columns over kp (multiple of 4): a = 8-row block [kp/4][8][4], w = panel [kp][8]. */
static void tile8(size_t kp, const float *a, const float *w, float *c, size_t cs, size_t nc) {
  float32x4_t acc[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
  for (size_t kb = kp / 4; kb; kb--) {
    const float32x4x4_t xa = SQ_LD4_F32(a), xb = SQ_LD4_F32(a);
    const float32x4_t x[8] = {xa.val[0], xa.val[1], xa.val[2], xa.val[3], xb.val[0], xb.val[1], xb.val[2], xb.val[3]};
    const float32x4x4_t w0 = SQ_LD4_F32(w);
    SQ_F32_K8(w0.val[0], w0.val[1], 0) SQ_F32_K8(w0.val[2], w0.val[3], 1)
    const float32x4x4_t w1 = SQ_LD4_F32(w);
    SQ_F32_K8(w1.val[0], w1.val[1], 2) SQ_F32_K8(w1.val[2], w1.val[3], 3)
  }
  sq_f32_store_rows(8, acc, c, cs, nc);
}

void squat_gemm_f32_f32_8x8__neon(size_t m, size_t n, size_t k, const void *lhs, const void *rhs, void *cv, size_t cs) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const float *a = lhs;
  float *c = cv;
  for (size_t p = 0; p < n; p += kNR) {
    const float *w = (const float *)rhs + p * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    for (size_t i0 = 0; i0 < m; i0 += kMR) {
      const size_t R = m - i0 < kMR ? m - i0 : kMR;
      const float *blk = a + i0 * kp;
      float *cb = c + i0 * cs + p;
      if (R == 8) { tile8(kp, blk, w, cb, cs, nc); continue; }
      size_t r = 0; /* remainder block [kp/4][R][4]: a 4-row tile, then single rows */
      if (R >= 4) { sq_f32_tile(4, kp, blk, R * 4, w, cb, cs, nc); r = 4; }
      for (; r < R; r++) sq_f32_tile(1, kp, blk + r * 4, R * 4, w, cb + r * cs, cs, nc);
    }
  }
}

const squat_fgemm_ukernel squat_ukernel_gemm_f32_f32_8x8_neon = {
  .name = "gemm_f32_f32_8x8_neon", .precision = "fp32", .elem_size = 4, .features = SQUAT_FEAT_NEON,
  .get_mr = get_mr, .get_nr = get_nr, .get_kr = get_kr, .get_rhs_packed_size = rhs_size, .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size, .pack_lhs = pack_lhs, .run_matmul = squat_gemm_f32_f32_8x8__neon,
  .rhs_layout = SQUAT_FLAYOUT_F32_NR8,
};
