/// FP16 baseline (the paper's reference precision), prefill: fmla .8h by element (8 MACs per instruction),
/// MR=8, NR=16, K block 8, accumulating in fp16 like the paper's FP16 path.
/// Register budget of the 8x16 tile: 16 accumulators (v16-v31) + 8 activation vectors (v0-v7, the indexed operand
/// of fmla .h must lie in v0-v15) + 2 x 4 weight vectors (v8-v15, one ld1 of four registers per two k) = 32, so
/// nothing spills. The inner loop is written with squat_ops.h (one volatile asm per instruction on ARM) because
/// GCC 12 hoists all sixteen weight loads of a K block above the fmla's when it may schedule them (33 live
/// vectors: 3 spills and 16 reloads per block). Per K block of 8: 128 fmla + 2 activation loads + 4 weight
/// loads + subs + b.ne = 136 instructions per 1024 MACs. Remainder tiles (R < 8 rows) are plain intrinsics.
/// Packers: pack_rhs_f16_nxk (RHS [N/16][Kp][16]), pack_lhs_blocked (LHS: 8-row blocks, 8-element chunks).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
#error "gemm_f16_f16_8x16_neonfp16arith needs __ARM_FEATURE_FP16_VECTOR_ARITHMETIC (-march=armv8.2-a+fp16)"
#endif
#include "squat_fgemm_interface.h"
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "squat_neon.h"
#include "squat_ops.h"
#include "tile_f16.h"

static const size_t kMR = 8, kNR = 16, kKR = 1, kKB = 8;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) * 2; }
static void pack_rhs(size_t n, size_t k, const void *w, size_t ws, void *out) {
  pack_rhs_f16_nxk(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB) * 2; }
static void pack_lhs(size_t m, size_t k, const void *x, size_t xs, void *out) {
  pack_lhs_blocked(2, kMR, kKB, SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}

#define SQ_F16_K8(W0, W1, L)                                                                   \
  _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {                                        \
    SQ_FMLA_F16_LANE(acc[r][0], W0, x[r], L);                                                  \
    SQ_FMLA_F16_LANE(acc[r][1], W1, x[r], L);                                                  \
  }

/* 8 rows x 16 columns over kp (multiple of 8): a = 8-row block [kp/8][8][8], w = panel [kp][16]. */
static void tile8(size_t kp, const sq_f16_t *a, const sq_f16_t *w, uint16_t *c, size_t cs, size_t nc) {
  float16x8_t acc[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = vreinterpretq_f16_u16(vdupq_n_u16(0));
  for (size_t kb = kp / 8; kb; kb--) {
    const float16x8x4_t xa = SQ_LD4_F16(a), xb = SQ_LD4_F16(a);
    const float16x8_t x[8] = {xa.val[0], xa.val[1], xa.val[2], xa.val[3], xb.val[0], xb.val[1], xb.val[2], xb.val[3]};
    const float16x8x4_t w0 = SQ_LD4_F16(w);
    SQ_F16_K8(w0.val[0], w0.val[1], 0) SQ_F16_K8(w0.val[2], w0.val[3], 1)
    const float16x8x4_t w1 = SQ_LD4_F16(w);
    SQ_F16_K8(w1.val[0], w1.val[1], 2) SQ_F16_K8(w1.val[2], w1.val[3], 3)
    const float16x8x4_t w2 = SQ_LD4_F16(w);
    SQ_F16_K8(w2.val[0], w2.val[1], 4) SQ_F16_K8(w2.val[2], w2.val[3], 5)
    const float16x8x4_t w3 = SQ_LD4_F16(w);
    SQ_F16_K8(w3.val[0], w3.val[1], 6) SQ_F16_K8(w3.val[2], w3.val[3], 7)
  }
  sq_f16_store_rows(8, acc, c, cs, nc);
}

void squat_gemm_f16_f16_8x16__neonfp16arith(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                             void *cv, size_t cs) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const sq_f16_t *a = lhs;
  uint16_t *c = cv;
  for (size_t p = 0; p < n; p += kNR) {
    const sq_f16_t *w = (const sq_f16_t *)rhs + p * kp;
    const size_t nc = n - p < kNR ? n - p : kNR;
    for (size_t i0 = 0; i0 < m; i0 += kMR) {
      const size_t R = m - i0 < kMR ? m - i0 : kMR;
      const sq_f16_t *blk = a + i0 * kp;
      uint16_t *cb = c + i0 * cs + p;
      if (R == 8) { tile8(kp, blk, w, cb, cs, nc); continue; }
      size_t r = 0; /* remainder block [kp/8][R][8]: a 4-row tile, then single rows */
      if (R >= 4) { sq_f16_tile(4, kp, blk, R * 8, w, cb, cs, nc); r = 4; }
      for (; r < R; r++) sq_f16_tile(1, kp, blk + r * 8, R * 8, w, cb + r * cs, cs, nc);
    }
  }
}

const squat_fgemm_ukernel squat_ukernel_gemm_f16_f16_8x16_neonfp16arith = {
  .name = "gemm_f16_f16_8x16_neonfp16arith", .precision = "fp16", .elem_size = 2,
  .features = SQUAT_FEAT_NEON | SQUAT_FEAT_FP16,
  .get_mr = get_mr, .get_nr = get_nr, .get_kr = get_kr, .get_rhs_packed_size = rhs_size, .pack_rhs = pack_rhs,
  .get_lhs_packed_size = lhs_size, .pack_lhs = pack_lhs, .run_matmul = squat_gemm_f16_f16_8x16__neonfp16arith,
  .rhs_layout = SQUAT_FLAYOUT_F16_NR16,
};
