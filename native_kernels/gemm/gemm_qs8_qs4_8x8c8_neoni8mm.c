/// W4 weights (two per byte) x int8 activations on the smmla path (W4A8, and W4A4 with acts in [-8,7]).
/// M >= 8: unpack each 8-column panel once into scratch, then the W8A8 smmla tile. M < 8: unpack in registers
/// with the x16 trick (p<<4 = 16*w_lo, p & 0xF0 = 16*w_hi), one arithmetic shift by 4 at the end.
/// Packers: pack_rhs_qs4_nxk_c8x2 (RHS), pack_lhs_qs8_rowpairs_c8 (LHS).
#if !defined(SQUAT_SIMDE) && !defined(__ARM_FEATURE_MATMUL_INT8)
#error "gemm_qs8_qs4_8x8c8_neoni8mm needs __ARM_FEATURE_MATMUL_INT8 (-march=armv8.2-a+i8mm)"
#endif
#include "squat_igemm_interface.h"
#include "squat_pack.h"
#include "tile_qs8_c8x2_8x8_neoni8mm.h"

static const size_t kMR = 8, kNR = 8, kKR = 8, kKB = 16;
static size_t get_mr(void) { return kMR; }
static size_t get_nr(void) { return kNR; }
static size_t get_kr(void) { return kKR; }
static size_t rhs_size(size_t n, size_t k) { return SQ_ROUND_UP(n, kNR) * SQ_ROUND_UP(k, kKB) / 2; }
static void pack_rhs(size_t n, size_t k, const int8_t *w, size_t ws, void *out) {
  pack_rhs_qs4_nxk_c8x2(kNR, SQ_ROUND_UP(k, kKB), n, k, w, ws, out);
}
static size_t lhs_size(size_t m, size_t k) { return SQ_ROUND_UP(m, 2) * SQ_ROUND_UP(k, kKB); }
static void pack_lhs(size_t m, size_t k, const int8_t *x, size_t xs, void *out) {
  pack_lhs_qs8_rowpairs_c8(SQ_ROUND_UP(k, kKB), m, k, x, xs, out);
}
static size_t scratch_size(size_t m, size_t n, size_t k) { (void)m; (void)n; return kNR * SQ_ROUND_UP(k, kKB); }

/* packed = 0: w is an unpacked int8 panel; packed = 1: w is the nibble panel, unpacked x16 in registers, K split
   into chunks of 2^16 so that 16 * C_chunk < 2^31 (exact), each chunk shifted back and added (ssra). */
#define SQ_Q4_KCHUNK ((size_t)1 << 16)
SQ_ALWAYS_INLINE void tile(const int P, const int packed, size_t kp, const int8_t *a, const int8_t *w,
                           int32_t *c, size_t cs, size_t nrows, size_t ncols) {
  int32x4_t tot[4][4];
  _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) tot[p][0] = tot[p][1] = tot[p][2] = tot[p][3] = vdupq_n_s32(0);
  const size_t chunk = packed ? SQ_Q4_KCHUNK : kp;
  for (size_t k0 = 0; k0 < kp; k0 += chunk) {
    const size_t k1 = kp - k0 < chunk ? kp : k0 + chunk;
    int32x4_t acc[4][4];
    _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) acc[p][0] = acc[p][1] = acc[p][2] = acc[p][3] = vdupq_n_s32(0);
    for (size_t k = k0; k < k1; k += 8) {
      int8x16_t x[4], b[4];
      _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) x[p] = vld1q_s8(a + p * 2 * kp + 2 * k);
      if (packed) {
        const int8x16_t p0 = vld1q_s8(w), p1 = vld1q_s8(w + 16);
        const int8x16_t hm = vdupq_n_s8((int8_t)0xF0);
        b[0] = vshlq_n_s8(p0, 4); b[1] = vshlq_n_s8(p1, 4);
        b[2] = vandq_s8(p0, hm); b[3] = vandq_s8(p1, hm);
        w += 32;
      } else {
        b[0] = vld1q_s8(w); b[1] = vld1q_s8(w + 16); b[2] = vld1q_s8(w + 32); b[3] = vld1q_s8(w + 48);
        w += 64;
      }
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
        _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) acc[p][j] = vmmlaq_s32(acc[p][j], x[p], b[j]);
    }
    _Pragma("GCC unroll 4") for (int p = 0; p < P; p++)
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
        tot[p][j] = packed ? vsraq_n_s32(tot[p][j], acc[p][j], 4) : vaddq_s32(tot[p][j], acc[p][j]);
  }
  _Pragma("GCC unroll 4") for (int p = 0; p < P; p++) {
    if (nrows <= (size_t)(2 * p)) break;
    sq_store_mmla_pair(tot[p], c + 2 * p * cs, cs, nrows - 2 * p, ncols);
  }
}

static void unpack_panel(size_t kp, const int8_t *src, int8_t *dst) {
  /* 32 packed bytes -> 64 int8 weights in c8x2 order */
  for (size_t b = 0; b < kp * kNR / 2; b += 32) {
    const int8x16_t p0 = vld1q_s8(src + b), p1 = vld1q_s8(src + b + 16);
    vst1q_s8(dst + 2 * b, vshrq_n_s8(vshlq_n_s8(p0, 4), 4));
    vst1q_s8(dst + 2 * b + 16, vshrq_n_s8(vshlq_n_s8(p1, 4), 4));
    vst1q_s8(dst + 2 * b + 32, vshrq_n_s8(p0, 4));
    vst1q_s8(dst + 2 * b + 48, vshrq_n_s8(p1, 4));
  }
}

void squat_gemm_qs8_qs4_8x8c8__neoni8mm(size_t m, size_t n, size_t k, const void *lhs, const void *rhs,
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
      for (; i + 8 <= m; i += 8) tile(4, 0, kp, a + i * kp, w, c + i * cs + p, cs, 8, nc);
      if (i + 4 <= m) { tile(2, 0, kp, a + i * kp, w, c + i * cs + p, cs, 4, nc); i += 4; }
      for (; i < m; i += 2) tile(1, 0, kp, a + i * kp, w, c + i * cs + p, cs, m - i, nc);
    } else {
      if (i + 4 <= m) { tile(2, 1, kp, a + i * kp, wq, c + i * cs + p, cs, 4, nc); i += 4; }
      for (; i < m; i += 2) tile(1, 1, kp, a + i * kp, wq, c + i * cs + p, cs, m - i, nc);
    }
  }
}

const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs4_8x8c8_neoni8mm = {
  .name = "gemm_qs8_qs4_8x8c8_neoni8mm",
  .precision = "w4a8",
  .weight_bits = 4,
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
  .run_matmul = squat_gemm_qs8_qs4_8x8c8__neoni8mm,
  .rhs_layout = SQUAT_LAYOUT_QS4_C8X2,
};
