/// LHS packers of the integer kernels, each in two forms sharing one body:
///  - pack_lhs_*        int8 activations in (squat_igemm_ukernel.pack_lhs);
///  - pack_lhs_quant_*  float32 activations in, quantized chunk by chunk straight into the packed layout
///                      (squat_igemm_ukernel.pack_lhs_quant, the fused step of squat_qlinear_run): the int8 row
///                      never exists in memory, and the layout transform runs on the quantized registers.
/// Positions beyond K are zero in both forms.
#include <string.h>
#include "squat_pack.h"
#include "squat_ops.h"
#include "squat_quant.h"

/* One activation row as a source of 16-element int8 chunks. FL (a constant after inlining) selects floats. */
typedef struct sq_row_src {
  const float *xf;
  const int8_t *xi;
  size_t k;
  sq_qparams p;
  int zp, clamp; /* the row's site needs the zero-point add / the [qmin, qmax] clamp (else saturation does it) */
} sq_row_src;

/* q = clamp(round(x / s) + zp) for 16 floats (already loaded), skipping the add for zp = 0 and the clamp for the
   full int8 grid (the saturating narrow already gives it): ZP and CL are constants of the specialised loop. */
SQ_ALWAYS_INLINE int8x16_t sq_q16v(const int ZP, const int CL, const float32x4x4_t x, const sq_qparams *p) {
  const int32x4_t a = vcvtnq_s32_f32(vdivq_f32(x.val[0], p->s));
  const int32x4_t b = vcvtnq_s32_f32(vdivq_f32(x.val[1], p->s));
  const int32x4_t c = vcvtnq_s32_f32(vdivq_f32(x.val[2], p->s));
  const int32x4_t d = vcvtnq_s32_f32(vdivq_f32(x.val[3], p->s));
  int16x8_t lo = vqmovn_high_s32(vqmovn_s32(a), b), hi = vqmovn_high_s32(vqmovn_s32(c), d);
  if (ZP) { lo = vqaddq_s16(lo, p->zp); hi = vqaddq_s16(hi, p->zp); }
  const int8x16_t q = vqmovn_high_s16(vqmovn_s16(lo), hi);
  return CL ? vminq_s8(vmaxq_s8(q, p->qmin), p->qmax) : q;
}

SQ_ALWAYS_INLINE int8x16_t sq_src16(const int FL, const sq_row_src *s, size_t l) {
  if (l + 16 <= s->k) return FL ? sq_quant16(s->xf + l, &s->p) : vld1q_s8(s->xi + l);
  if (l >= s->k) return vdupq_n_s8(0);
  if (FL) return sq_quant_tail(s->xf + l, s->k - l, &s->p);
  int8_t t[16] = {0};
  for (size_t i = 0; i < s->k - l; i++) t[i] = s->xi[l + i];
  return vld1q_s8(t);
}

SQ_ALWAYS_INLINE sq_row_src sq_src_row(const int FL, size_t i, size_t k, const void *x, size_t xs,
                                       const squat_quant_rows *rows) {
  sq_row_src s;
  s.k = k;
  s.zp = s.clamp = 0;
  if (FL) {
    s.xf = (const float *)x + i * xs;
    s.xi = NULL;
    s.p = sq_row_params(rows, i, k, s.xf);
    const squat_act_site *st = sq_row_site(rows, i);
    s.zp = st->zero_point != 0;
    s.clamp = st->qmin != -128 || st->qmax != 127;
  } else {
    s.xf = NULL;
    s.xi = (const int8_t *)x + i * xs;
  }
  return s;
}

/* The full 16-element chunks of a row, into d (advanced by `step` bytes per chunk; KC 8 splits each chunk into
   halves `step / 2` apart). Returns the first element not done. */
SQ_ALWAYS_INLINE void sq_st_chunk(const int KC, int8_t *d, size_t step, int8x16_t q) {
  if (KC == 16) vst1q_s8(d, q);
  else { vst1_s8(d, vget_low_s8(q)); vst1_s8(d + step / 2, vget_high_s8(q)); }
}
/* 32 floats per iteration (two ld1 of four registers): 1.1 instructions per activation for the 8-bit grid */
SQ_ALWAYS_INLINE size_t sq_full_chunks_v(const int ZP, const int CL, const int KC, const sq_row_src *s, int8_t *d,
                                         size_t step) {
  const float *x = s->xf;
  for (size_t n = s->k / 32; n; n--) {
    const float32x4x4_t x0 = SQ_LD4_F32(x), x1 = SQ_LD4_F32(x);
    sq_st_chunk(KC, d, step, sq_q16v(ZP, CL, x0, &s->p));
    sq_st_chunk(KC, d + step, step, sq_q16v(ZP, CL, x1, &s->p));
    d += 2 * step;
  }
  size_t l = s->k / 32 * 32;
  if (l + 16 <= s->k) {
    sq_st_chunk(KC, d, step, sq_q16v(ZP, CL, SQ_LD4_F32(x), &s->p));
    l += 16;
  }
  return l;
}
SQ_ALWAYS_INLINE size_t sq_full_chunks(const int FL, const int KC, const sq_row_src *s, int8_t *d, size_t step) {
  if (!FL) {
    size_t l = 0;
    for (; l + 16 <= s->k; l += 16, d += step) sq_st_chunk(KC, d, step, vld1q_s8(s->xi + l));
    return l;
  }
  if (s->zp) return s->clamp ? sq_full_chunks_v(1, 1, KC, s, d, step) : sq_full_chunks_v(1, 0, KC, s, d, step);
  return s->clamp ? sq_full_chunks_v(0, 1, KC, s, d, step) : sq_full_chunks_v(0, 0, KC, s, d, step);
}

/* ---- blocked rows: [blocks of mr rows][kp/kc][R'][kc], R' = R or R rounded up to even (pair_pad) ---- */
SQ_ALWAYS_INLINE void blocked(const int FL, const int KC, size_t mr, int pair_pad, size_t kp, size_t m, size_t k,
                              const void *x, size_t xs, const squat_quant_rows *rows, int8_t *out) {
  for (size_t i0 = 0; i0 < m; i0 += mr) {
    const size_t R = m - i0 < mr ? m - i0 : mr, Rp = pair_pad ? SQ_ROUND_UP(R, 2) : R;
    const size_t step = 16 * Rp; /* bytes between a row's consecutive 16-element chunks */
    for (size_t r = 0; r < Rp; r++) {
      int8_t *d = out + r * KC;
      if (r >= R) { /* zero pad row of a pair */
        for (size_t l = 0; l < kp; l += 16, d += step) sq_st_chunk(KC, d, step, vdupq_n_s8(0));
        continue;
      }
      const sq_row_src s = sq_src_row(FL, i0 + r, k, x, xs, rows);
      size_t l = sq_full_chunks(FL, KC, &s, d, step);
      for (d += l / 16 * step; l < kp; l += 16, d += step) sq_st_chunk(KC, d, step, sq_src16(FL, &s, l));
    }
    out += kp * Rp;
  }
}
void pack_lhs_qs8_blocked(size_t kc, size_t mr, int pair_pad, size_t kp, size_t m, size_t k, const int8_t *x,
                          size_t xs, int8_t *out) {
  if (kc == 16) blocked(0, 16, mr, pair_pad, kp, m, k, x, xs, NULL, out);
  else blocked(0, 8, mr, pair_pad, kp, m, k, x, xs, NULL, out);
}
void pack_lhs_quant_blocked(size_t kc, size_t mr, int pair_pad, size_t kp, size_t m, size_t k, const float *x,
                            size_t xs, const squat_quant_rows *rows, int8_t *out) {
  if (kc == 16) blocked(1, 16, mr, pair_pad, kp, m, k, x, xs, rows, out);
  else blocked(1, 8, mr, pair_pad, kp, m, k, x, xs, rows, out);
}

/* ---- rows with every 8-byte chunk doubled: [m][kp/8][x(8) x(8)], one operand of the plain-sdot c8 GEMV ---- */
SQ_ALWAYS_INLINE void rows_dup8(const int FL, size_t kp, size_t m, size_t k, const void *x, size_t xs,
                                const squat_quant_rows *rows, int8_t *out) {
  for (size_t i = 0; i < m; i++) {
    const sq_row_src s = sq_src_row(FL, i, k, x, xs, rows);
    int8_t *o = out + i * 2 * kp;
    for (size_t l = 0; l < kp; l += 16, o += 32) {
      const int64x2_t q = vreinterpretq_s64_s8(sq_src16(FL, &s, l));
      vst1q_s8(o, vreinterpretq_s8_s64(vzip1q_s64(q, q)));
      vst1q_s8(o + 16, vreinterpretq_s8_s64(vzip2q_s64(q, q)));
    }
  }
}
void pack_lhs_qs8_rows_dup8(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out) {
  rows_dup8(0, kp, m, k, x, xs, NULL, out);
}
void pack_lhs_quant_rows_dup8(size_t kp, size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows,
                              int8_t *out) {
  rows_dup8(1, kp, m, k, x, xs, rows, out);
}

/* ---- 4-bit-weight decode layouts: [m int32 per-row term, padded to 16 bytes][m][kp] ---- */
static size_t head_bytes(size_t m) { return SQ_ROUND_UP(m * 4, 16); }

/* Rows as they are, head = sum of the activations at the low-nibble positions (k mod 32 < 16): the offset-binary
   low nibble (w + 8) adds 8 * that sum, which gemm_qs8_qs4_1x8c4_neondot takes back. */
SQ_ALWAYS_INLINE void rows_q4lo(const int FL, size_t kp, size_t m, size_t k, const void *x, size_t xs,
                                const squat_quant_rows *rows, int8_t *out) {
  int32_t *head = (int32_t *)out;
  for (size_t i = 0; i < m; i++) {
    const sq_row_src s = sq_src_row(FL, i, k, x, xs, rows);
    int8_t *o = out + head_bytes(m) + i * kp;
    int32x4_t sum = vdupq_n_s32(0);
    for (size_t l = 0; l < kp; l += 32) {
      const int8x16_t lo = sq_src16(FL, &s, l), hi = sq_src16(FL, &s, l + 16);
      vst1q_s8(o + l, lo);
      vst1q_s8(o + l + 16, hi);
      sum = vpadalq_s16(sum, vpaddlq_s8(lo));
    }
    head[i] = vaddvq_s32(sum);
  }
}
void pack_lhs_qs8_q4lo(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out) {
  rows_q4lo(0, kp, m, k, x, xs, NULL, out);
}
void pack_lhs_quant_q4lo(size_t kp, size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows,
                         int8_t *out) {
  rows_q4lo(1, kp, m, k, x, xs, rows, out);
}

/* W4A4 decode operands (gemm_qs4_qs4_1x8c4_neondot): per 32-k block, x_b = x[0..16) (low nibbles' activations)
   and x_a = x[16..32) become y = x_a and z = 16 x_b - x_a + 7 (in [-128, 127] for x in [-8, 7]); the head holds
   T = 128 * sum(x_b) + 56 * kp / 2, the constant the two sdots add besides 16 * C. */
SQ_ALWAYS_INLINE void rows_q4yz(const int FL, size_t kp, size_t m, size_t k, const void *x, size_t xs,
                                const squat_quant_rows *rows, int8_t *out) {
  int32_t *head = (int32_t *)out;
  const int8x16_t seven = vdupq_n_s8(7);
  for (size_t i = 0; i < m; i++) {
    const sq_row_src s = sq_src_row(FL, i, k, x, xs, rows);
    int8_t *o = out + head_bytes(m) + i * kp;
    int32x4_t sum = vdupq_n_s32(0);
    for (size_t l = 0; l < kp; l += 32) {
      const int8x16_t xb = sq_src16(FL, &s, l), xa = sq_src16(FL, &s, l + 16);
      vst1q_s8(o + l, xa);
      vst1q_s8(o + l + 16, vaddq_s8(vsubq_s8(vshlq_n_s8(xb, 4), xa), seven));
      sum = vpadalq_s16(sum, vpaddlq_s8(xb));
    }
    head[i] = (int32_t)((uint32_t)vaddvq_s32(sum) * 128u + 56u * (uint32_t)(kp / 2));
  }
}
void pack_lhs_qs8_q4yz(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out) {
  rows_q4yz(0, kp, m, k, x, xs, NULL, out);
}
void pack_lhs_quant_q4yz(size_t kp, size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows,
                         int8_t *out) {
  rows_q4yz(1, kp, m, k, x, xs, rows, out);
}
size_t pack_lhs_q4_head_bytes(size_t m) { return head_bytes(m); }
