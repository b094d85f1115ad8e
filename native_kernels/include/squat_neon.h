/// @file squat_neon.h
/// One include for NEON intrinsics on every target.
/// - Real aarch64: <arm_neon.h>.
/// - x86 (preset x86-simde, SQUAT_SIMDE defined): SIMDe with native aliases, plus scalar
///   fallbacks for the few intrinsics SIMDe 0.7.x lacks (smmla, fp16 fma, fcvtas, fcvtns, fdiv (f32 and f64), smlal2-by-lane),
///   and faster ones for sdot, whose SIMDe fallback is a scalar loop. Every fallback is bit-exact with the
///   instruction it stands for.
#ifndef SQUAT_NEON_H
#define SQUAT_NEON_H

#include <stddef.h>
#include <stdint.h>

#if defined(SQUAT_SIMDE)
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/arm/neon.h>
#include <math.h>

#undef vfmaq_laneq_f32
#define vfmaq_laneq_f32(a, b, v, lane) vfmaq_f32((a), (b), vdupq_laneq_f32((v), (lane)))

/* fcvtas: round to nearest, ties away from zero (C roundf), saturating. */
static inline int32x4_t sq_compat_vcvtaq_s32_f32(float32x4_t v) {
  float t[4]; int32_t r[4];
  vst1q_f32(t, v);
  for (int i = 0; i < 4; i++) {
    float x = roundf(t[i]);
    r[i] = x >= 2147483647.0f ? INT32_MAX : x <= -2147483648.0f ? INT32_MIN : (int32_t)x;
  }
  return vld1q_s32(r);
}
#define vcvtaq_s32_f32(v) sq_compat_vcvtaq_s32_f32(v)

/* fcvtns: round to nearest, ties to even, saturating, NaN -> 0. */
static inline int32x4_t sq_compat_vcvtnq_s32_f32(float32x4_t v) {
  float t[4]; int32_t r[4];
  vst1q_f32(t, v);
  for (int i = 0; i < 4; i++) {
    float x = nearbyintf(t[i]); /* default rounding mode: ties to even */
    r[i] = x != x ? 0 : x >= 2147483647.0f ? INT32_MAX : x <= -2147483648.0f ? INT32_MIN : (int32_t)x;
  }
  return vld1q_s32(r);
}
#define vcvtnq_s32_f32(v) sq_compat_vcvtnq_s32_f32(v)

static inline float32x4_t sq_compat_vdivq_f32(float32x4_t a, float32x4_t b) {
  float x[4], y[4];
  vst1q_f32(x, a); vst1q_f32(y, b);
  for (int i = 0; i < 4; i++) x[i] = x[i] / y[i];
  return vld1q_f32(x);
}
#define vdivq_f32(a, b) sq_compat_vdivq_f32((a), (b))
static inline float64x2_t sq_compat_vdivq_f64(float64x2_t a, float64x2_t b) {
  return vsetq_lane_f64(vgetq_lane_f64(a, 1) / vgetq_lane_f64(b, 1),
                        vdupq_n_f64(vgetq_lane_f64(a, 0) / vgetq_lane_f64(b, 0)), 1);
}
#define vdivq_f64(a, b) sq_compat_vdivq_f64((a), (b))

/* smlal2 by lane: acc + widen(high4(a)) * v[lane] */
#define vmlal_high_laneq_s16(acc, a, v, lane) vmlal_laneq_s16((acc), vget_high_s16(a), (v), (lane))

/* The integer dot products through widening multiplies and pairwise adds, which SIMDe maps onto SSE/AVX
   (its own sdot fallback is a scalar loop). Exact: every partial sum is an int16 product or a sum of at most
   eight of them, added to the int32 accumulator with wrap-around like the instruction. */
static inline int32x4_t sq_compat_dot4(int8x16_t a, int8x16_t b) { /* [sum a[4i..4i+3] * b[4i..4i+3]] */
  const int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  const int32x4_t hi = vpaddlq_s16(vmull_high_s8(a, b));
  return vpaddq_s32(lo, hi);
}
#undef vdotq_s32
#define vdotq_s32(r, a, b) vaddq_s32((r), sq_compat_dot4((a), (b)))
#undef vdotq_laneq_s32
#define vdotq_laneq_s32(r, a, b, lane) \
  vaddq_s32((r), sq_compat_dot4((a), vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(b), (lane)))))

/* smmla: r(2x2, row-major) += A(2x8) * B(2x8)^T, A = rows of a, B = rows of b. */
static inline int32x4_t sq_compat_vmmlaq_s32(int32x4_t r, int8x16_t a, int8x16_t b) {
  const int8x8_t a0 = vget_low_s8(a), a1 = vget_high_s8(a), b0 = vget_low_s8(b), b1 = vget_high_s8(b);
  const int32x4_t s00 = vpaddlq_s16(vmull_s8(a0, b0)), s01 = vpaddlq_s16(vmull_s8(a0, b1));
  const int32x4_t s10 = vpaddlq_s16(vmull_s8(a1, b0)), s11 = vpaddlq_s16(vmull_s8(a1, b1));
  return vaddq_s32(r, vpaddq_s32(vpaddq_s32(s00, s01), vpaddq_s32(s10, s11)));
}
#define vmmlaq_s32(r, a, b) sq_compat_vmmlaq_s32((r), (a), (b))

/* fp16 fused multiply-add by lane, single rounding (a*b+c is exact in double for binary16 inputs). */
static inline float16x8_t sq_compat_vfmaq_laneq_f16(float16x8_t acc, float16x8_t b, float16x8_t v, int lane) {
  _Float16 a_[8], b_[8], v_[8];
  vst1q_f16((simde_float16 *)a_, acc); vst1q_f16((simde_float16 *)b_, b); vst1q_f16((simde_float16 *)v_, v);
  for (int i = 0; i < 8; i++) a_[i] = (_Float16)((double)b_[i] * (double)v_[lane] + (double)a_[i]);
  return vld1q_f16((const simde_float16 *)a_);
}
#define vfmaq_laneq_f16(a, b, v, lane) sq_compat_vfmaq_laneq_f16((a), (b), (v), (lane))
typedef simde_float16 sq_f16_t;
typedef struct { float16x8_t val[4]; } float16x8x4_t; /* absent from SIMDe 0.7.4 */
#else
#if !defined(__aarch64__)
#error "squat native kernels: build for aarch64, or define SQUAT_SIMDE (preset x86-simde) to emulate NEON"
#endif
#include <arm_neon.h>
typedef float16_t sq_f16_t;
/* GCC 12 expands vfmaq_laneq_f16 into dup + fmla whenever the dup is shared by two fmla (combine will not
   duplicate it), which would handicap the FP16 baseline with an extra instruction per two fmla.
   Emit the by-element form directly; the indexed operand must be in v0-v15 ("x" constraint). */
#undef vfmaq_laneq_f16
#define vfmaq_laneq_f16(a, b, v, lane)                                                         \
  __extension__({                                                                             \
    float16x8_t sq_acc_ = (a);                                                                \
    __asm__("fmla %0.8h, %1.8h, %2.h[%3]" : "+w"(sq_acc_) : "w"(b), "x"(v), "i"(lane));      \
    sq_acc_;                                                                                  \
  })
#endif

#define SQ_ALWAYS_INLINE static inline __attribute__((always_inline))
#define SQ_ROUND_UP(x, a) ((((x) + (a) - 1) / (a)) * (a))

#endif
