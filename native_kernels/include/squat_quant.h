/// @file squat_quant.h
/// NEON activation quantization shared by the fused LHS packers and the generic qlinear path. Bit-exact with
/// squat.export.ActSite.quantize (and ref/ref_qlinear.c):
///     q = clamp(round_half_to_even(x / s) + zp, qmin, qmax)
/// - x / s is fdiv (a reciprocal multiply rounds differently for some x);
/// - fcvtns rounds half to even like torch.round; it saturates to int32, NaN gives 0 (NaN input is unsupported);
/// - the int32 -> int16 -> int8 narrowing saturates and the zero point is a saturating int16 add. With
///   |zp| <= SQ_MAX_ABS_ZP every saturation lands on the same side of [qmin, qmax] as the exact value, so the
///   final clamp equals the clamp of the exact round(x / s) + zp.
#ifndef SQUAT_QUANT_H
#define SQUAT_QUANT_H
#include "squat_neon.h"
#include "squat_qlinear.h"

#define SQ_MAX_ABS_ZP 16384
#define SQ_SCALE_EPS 1e-8f /* squat.quant.quantizers.EPS, as the float32 torch's clamp_min compares with */

typedef struct sq_qparams {
  float32x4_t s;
  int16x8_t zp;
  int8x16_t qmin, qmax;
} sq_qparams;

SQ_ALWAYS_INLINE sq_qparams sq_qparams_make(float scale, int zp, int qmin, int qmax) {
  sq_qparams p;
  p.s = vdupq_n_f32(scale);
  p.zp = vdupq_n_s16((int16_t)zp);
  p.qmin = vdupq_n_s8((int8_t)qmin);
  p.qmax = vdupq_n_s8((int8_t)qmax);
  return p;
}

/// 16 consecutive floats -> 16 int8.
SQ_ALWAYS_INLINE int8x16_t sq_quant16(const float *x, const sq_qparams *p) {
  const int32x4_t a = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(x), p->s));
  const int32x4_t b = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(x + 4), p->s));
  const int32x4_t c = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(x + 8), p->s));
  const int32x4_t d = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(x + 12), p->s));
  const int16x8_t lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(a), b), p->zp);
  const int16x8_t hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(c), d), p->zp);
  return vminq_s8(vmaxq_s8(vqmovn_high_s16(vqmovn_s16(lo), hi), p->qmin), p->qmax);
}

/// The first `cnt` (< 16) floats of x quantized, the rest of the 16 lanes 0 (K padding stays zero).
SQ_ALWAYS_INLINE int8x16_t sq_quant_tail(const float *x, size_t cnt, const sq_qparams *p) {
  float t[16] = {0};
  int8_t q[16];
  for (size_t i = 0; i < cnt; i++) t[i] = x[i];
  vst1q_s8(q, sq_quant16(t, p));
  for (size_t i = cnt; i < 16; i++) q[i] = 0;
  return vld1q_s8(q);
}

/// max |x[0..k)| (NaN ignored).
SQ_ALWAYS_INLINE float sq_absmax(size_t k, const float *x) {
  float32x4_t m0 = vdupq_n_f32(0.0f), m1 = m0;
  size_t l = 0;
  for (; l + 8 <= k; l += 8) {
    m0 = vmaxq_f32(m0, vabsq_f32(vld1q_f32(x + l)));
    m1 = vmaxq_f32(m1, vabsq_f32(vld1q_f32(x + l + 4)));
  }
  float m = vmaxvq_f32(vmaxq_f32(m0, m1));
  for (; l < k; l++) {
    const float a = x[l] < 0 ? -x[l] : x[l];
    if (a > m) m = a;
  }
  return m;
}

/// The scale row x is quantized with: the site's trained scale, or max|x| / (qmax - zp) clamped at 1e-8f.
SQ_ALWAYS_INLINE float sq_row_scale(const squat_act_site *s, size_t k, const float *x) {
  if (s->mode == SQUAT_ACT_STATIC) return s->scale;
  const float v = sq_absmax(k, x) / (float)(s->qmax - s->zero_point);
  return v < SQ_SCALE_EPS ? SQ_SCALE_EPS : v;
}

/// Row i's site under a squat_quant_rows description.
SQ_ALWAYS_INLINE const squat_act_site *sq_row_site(const squat_quant_rows *r, size_t i) {
  return (r->high_mask && r->high_mask[i]) ? r->high : r->low;
}

/// Quantize row i of x (k floats) with its site; returns the parameters (scale and zero point are also stored
/// in rows->row_scale[i], rows->row_zp[i]).
SQ_ALWAYS_INLINE sq_qparams sq_row_params(const squat_quant_rows *rows, size_t i, size_t k, const float *xrow) {
  const squat_act_site *s = sq_row_site(rows, i);
  const float sc = sq_row_scale(s, k, xrow);
  rows->row_scale[i] = sc;
  rows->row_zp[i] = s->zero_point;
  return sq_qparams_make(sc, s->zero_point, s->qmin, s->qmax);
}

/// Quantize a whole row into contiguous int8 (k bytes, no padding): the generic path's packer input.
void sq_quantize_row_i8(size_t k, const float *x, const sq_qparams *p, int8_t *q);
/// Dequantize int32 C rows (generic path): y = (float)(c - zp * rowsum) * (s_x * s_w) (+ bias).
void sq_dequant_rows(size_t m, size_t n, const int32_t *c, size_t cs, const squat_dequant *dq, float *y, size_t ys);

#endif
