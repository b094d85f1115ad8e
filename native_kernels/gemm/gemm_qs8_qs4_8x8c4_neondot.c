/// W4 weights (two per byte), int8 activations (W4A8, and W4A4 with activations in [-8,7]) on the sdot path.
/// The faster alternative to MKMP: nibbles are unpacked to int8 and fed to sdot (16 MACs/instruction).
///  - M >= 8: each 8-column panel is unpacked once into scratch (3 instructions per 32 weights, amortised over
///    all M rows), then the W8A8 register tile runs on it.
///  - M < 8 (decode): unpack in registers with the x16 trick: p<<4 = 16*w_lo and p & 0xF0 = 16*w_hi are exact
///    int8 values, so sdot accumulates 16*C; K is split into chunks of 2^16 so 16*C_chunk stays below 2^31, and
///    one shift per chunk restores C.
/// Packers: pack_rhs_qs4_nxk_c4 (RHS), pack_lhs_qs8_rows (LHS).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_qs8_qs4_8x8c4_neondot needs __ARM_FEATURE_DOTPROD (-march=armv8.2-a+dotprod)"
#endif
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_qs8_c4_8x8_neondot.h"

static const size_t kMR = 8, kNR = 8, kKR = 4, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) / 2; }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs4_nxk_c4(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return m * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_rows(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; return kNR * SQ_ROUND_UP(k, kKB); }

#define SQ_Q4_STEP(L)                                                           \
  {                                                                             \
    const int8x16_t p = vld1q_s8(w);                                            \
    w += 16;                                                                    \
    const int8x16_t w0 = vshlq_n_s8(p, 4);                                      \
    const int8x16_t w1 = vandq_s8(p, vdupq_n_s8((int8_t)0xF0));                 \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                       \
      acc[r][0] = vdotq_laneq_s32(acc[r][0], w0, x[r], L);                      \
      acc[r][1] = vdotq_laneq_s32(acc[r][1], w1, x[r], L);                      \
    }                                                                           \
  }

/* 16 * C grows by at most 16 * 128 * 8 = 2^14 per k, so K is split into chunks of 2^16 (16 * C_chunk < 2^31,
   exact) and each chunk's sum is shifted back and added (ssra): exact for every K, mod 2^32 like the int8 kernels. */
#define SQ_Q4_KCHUNK ((size_t)1 << 16)
SQ_ALWAYS_INLINE void tile_q4_regs(const int R, size_t kp, const int8_t *a, size_t a_stride, const int8_t *w,
                                   int32_t *c, size_t c_stride, size_t ncols) {
  int32x4_t tot[4][2];
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) tot[r][0] = tot[r][1] = vdupq_n_s32(0);
  for (size_t k0 = 0; k0 < kp; k0 += SQ_Q4_KCHUNK) {
    const size_t k1 = kp - k0 < SQ_Q4_KCHUNK ? kp : k0 + SQ_Q4_KCHUNK;
    int32x4_t acc[4][2];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vdupq_n_s32(0);
    for (size_t k = k0; k < k1; k += 16) {
      int8x16_t x[4];
      _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) x[r] = vld1q_s8(a + r * a_stride + k);
      SQ_Q4_STEP(0) SQ_Q4_STEP(1) SQ_Q4_STEP(2) SQ_Q4_STEP(3)
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
      tot[r][0] = vsraq_n_s32(tot[r][0], acc[r][0], 4);
      tot[r][1] = vsraq_n_s32(tot[r][1], acc[r][1], 4);
    }
  }
  _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) sq_store_s32x8(c + r * c_stride, ncols, tot[r][0], tot[r][1]);
}

static void unpack_panel(size_t kp, const int8_t *src, int8_t *dst) {
  for (size_t b = 0; b < kp * kNR / 2; b += 16) {
    const int8x16_t p = vld1q_s8(src + b);
    vst1q_s8(dst + 2 * b, vshrq_n_s8(vshlq_n_s8(p, 4), 4));
    vst1q_s8(dst + 2 * b + 16, vshrq_n_s8(p, 4));
  }
}

void squat_gemm_qs8_qs4_8x8c4__neondot(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
                                        int32_t *c, size_t cs, void *scratch) {
  const size_t kp = SQ_ROUND_UP(k, kKB);
  const int8_t *a = lhs;
  for (size_t p = 0; p < n; p += kNR) {
    const int8_t *wq = (const int8_t *)rhs + p * kp / 2;
    const size_t nc = n - p < kNR ? n - p : kNR;
    size_t i = 0;
    if (m >= 8) {
      int8_t *w = scratch;
      unpack_panel(kp, wq, w);
      for (; i + 8 <= m; i += 8) sq_tile_qs8_c4_x8(8, kp, a + i * kp, kp, w, c + i * cs + p, cs, nc);
      if (i + 4 <= m) { sq_tile_qs8_c4_x8(4, kp, a + i * kp, kp, w, c + i * cs + p, cs, nc); i += 4; }
      for (; i < m; i++) sq_tile_qs8_c4_x8(1, kp, a + i * kp, kp, w, c + i * cs + p, cs, nc);
    } else {
      if (i + 4 <= m) { tile_q4_regs(4, kp, a + i * kp, kp, wq, c + i * cs + p, cs, nc); i += 4; }
      for (; i < m; i++) tile_q4_regs(1, kp, a + i * kp, kp, wq, c + i * cs + p, cs, nc);
    }
  }
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
};
