/// @file squat_ops.h
/// The instructions of the kernels' inner loops, one macro each, so one kernel source serves both builds:
/// - ARM: each macro is one `asm volatile` instruction. GCC keeps volatile asm in source order, so the inner
///   loop is exactly the instruction sequence written in the kernel (no hoisted loads, hence no spills; loads
///   post-increment their pointer, so the loop costs only its subs + b.ne), while GCC still allocates the
///   registers and the epilogues stay in C intrinsics. Multi-register loads return an x2/x4 tuple (consecutive
///   registers, printed with the %S..%V operand modifiers).
/// - SIMDe (x86): the same operations as intrinsics (squat_neon.h supplies the ones SIMDe lacks).
/// `p` arguments are lvalue pointers advanced past what they load.
#ifndef SQUAT_OPS_H
#define SQUAT_OPS_H
#include "squat_neon.h"

/// GEMV main loops unroll K to 32 or 64 on ARM (fewer loop instructions); SIMDe runs only their short remainder
/// loop, the same arithmetic in the same order with a quarter of the code to compile.
#if defined(SQUAT_SIMDE)
#define SQ_GV_UNROLL 0
#else
#define SQ_GV_UNROLL 1
#endif

#if defined(SQUAT_SIMDE)
#define SQ_LD1_S8(p) ({ const int8x16_t v_ = vld1q_s8((const int8_t *)(p)); (p) = (void *)((const int8_t *)(p) + 16); v_; })
/* x2/x4 loads as single-vector loads: SIMDe 0.7.4's vld1q_*_x4 copies byte by byte */
#define SQ_LD2_S8(p)                                                                                               \
  ({                                                                                                               \
    int8x16x2_t v_;                                                                                                \
    const int8_t *q_ = (const int8_t *)(p);                                                                        \
    v_.val[0] = vld1q_s8(q_); v_.val[1] = vld1q_s8(q_ + 16);                                                       \
    (p) = (void *)(q_ + 32);                                                                                       \
    v_;                                                                                                            \
  })
#define SQ_LD4_S8(p)                                                                                               \
  ({                                                                                                               \
    int8x16x4_t v_;                                                                                                \
    const int8_t *q_ = (const int8_t *)(p);                                                                        \
    v_.val[0] = vld1q_s8(q_); v_.val[1] = vld1q_s8(q_ + 16); v_.val[2] = vld1q_s8(q_ + 32); v_.val[3] = vld1q_s8(q_ + 48); \
    (p) = (void *)(q_ + 64);                                                                                       \
    v_;                                                                                                            \
  })
#define SQ_LD4_F32(p)                                                                                              \
  ({                                                                                                               \
    float32x4x4_t v_;                                                                                              \
    const float *q_ = (const float *)(p);                                                                          \
    v_.val[0] = vld1q_f32(q_); v_.val[1] = vld1q_f32(q_ + 4); v_.val[2] = vld1q_f32(q_ + 8); v_.val[3] = vld1q_f32(q_ + 12); \
    (p) = (void *)(q_ + 16);                                                                                       \
    v_;                                                                                                            \
  })
#define SQ_LD1_F16(p) ({ const float16x8_t v_ = vld1q_f16((const sq_f16_t *)(p)); (p) = (void *)((const sq_f16_t *)(p) + 8); v_; })
#define SQ_LD4_F16(p)                                                                                              \
  ({                                                                                                               \
    float16x8x4_t v_;                                                                                              \
    const sq_f16_t *q_ = (const sq_f16_t *)(p);                                                                    \
    v_.val[0] = vld1q_f16(q_); v_.val[1] = vld1q_f16(q_ + 8); v_.val[2] = vld1q_f16(q_ + 16); v_.val[3] = vld1q_f16(q_ + 24); \
    (p) = (void *)(q_ + 32);                                                                                       \
    v_;                                                                                                            \
  })
#define SQ_FMLA_F16_LANE(acc, b, v, lane) ((acc) = vfmaq_laneq_f16((acc), (b), (v), (lane)))
#define SQ_FMLA_F32_LANE(acc, b, v, lane) ((acc) = vfmaq_laneq_f32((acc), (b), (v), (lane)))
#define SQ_SDOT_LANE(acc, b, v, lane) ((acc) = vdotq_laneq_s32((acc), (b), (v), (lane)))
#define SQ_SDOT(acc, a, b) ((acc) = vdotq_s32((acc), (a), (b)))
#define SQ_SMMLA(acc, a, b) ((acc) = vmmlaq_s32((acc), (a), (b)))
#define SQ_AND(d, a, b) ((d) = vandq_s8((a), (b)))
#define SQ_SSHR4(d, a) ((d) = vshrq_n_s8((a), 4))
#define SQ_SHL4(d, a) ((d) = vshlq_n_s8((a), 4))
#define SQ_ST4_S8(p, v)                                                                               \
  do {                                                                                                \
    int8_t *q_ = (int8_t *)(p);                                                                       \
    vst1q_s8(q_, (v).val[0]); vst1q_s8(q_ + 16, (v).val[1]); vst1q_s8(q_ + 32, (v).val[2]); vst1q_s8(q_ + 48, (v).val[3]); \
    (p) = (void *)(q_ + 64);                                                                          \
  } while (0)
#define SQ_STP_S8(p, a, b) do { vst1q_s8((int8_t *)(p), (a)); vst1q_s8((int8_t *)(p) + 16, (b)); (p) = (void *)((int8_t *)(p) + 32); } while (0)
#define SQ_SUB(d, a, b) ((d) = vsubq_s8((a), (b)))
#define SQ_ZIP1_32(d, a, b) ((d) = vreinterpretq_s8_s32(vzip1q_s32(vreinterpretq_s32_s8(a), vreinterpretq_s32_s8(b))))
#define SQ_ZIP2_32(d, a, b) ((d) = vreinterpretq_s8_s32(vzip2q_s32(vreinterpretq_s32_s8(a), vreinterpretq_s32_s8(b))))
#define SQ_SMULL_LO(d, a, b) ((d) = vmull_s8(vget_low_s8(a), vget_low_s8(b)))
#define SQ_SMULL_HI(d, a, b) ((d) = vmull_high_s8((a), (b)))
#define SQ_SADALP(acc, p) ((acc) = vpadalq_s16((acc), (p)))
#else
#define SQ_LD1_S8(p) ({ int8x16_t v_; __asm__ volatile("ldr %q0, [%1], #16" : "=w"(v_), "+r"(p) : : "memory"); v_; })
#define SQ_LD2_S8(p) ({ int8x16x2_t v_; __asm__ volatile("ld1 {%S0.16b-%T0.16b}, [%1], #32" : "=w"(v_), "+r"(p) : : "memory"); v_; })
#define SQ_LD4_S8(p) ({ int8x16x4_t v_; __asm__ volatile("ld1 {%S0.16b-%V0.16b}, [%1], #64" : "=w"(v_), "+r"(p) : : "memory"); v_; })
#define SQ_LD4_F32(p) ({ float32x4x4_t v_; __asm__ volatile("ld1 {%S0.4s-%V0.4s}, [%1], #64" : "=w"(v_), "+r"(p) : : "memory"); v_; })
#define SQ_LD1_F16(p) ({ float16x8_t v_; __asm__ volatile("ldr %q0, [%1], #16" : "=w"(v_), "+r"(p) : : "memory"); v_; })
#define SQ_LD4_F16(p) ({ float16x8x4_t v_; __asm__ volatile("ld1 {%S0.8h-%V0.8h}, [%1], #64" : "=w"(v_), "+r"(p) : : "memory"); v_; })
/* The indexed operand of fmla .h must be in v0-v15 ("x"); the .s and .4b indexed forms take v0-v31. */
#define SQ_FMLA_F16_LANE(acc, b, v, lane) __asm__ volatile("fmla %0.8h, %1.8h, %2.h[%3]" : "+w"(acc) : "w"(b), "x"(v), "i"(lane))
#define SQ_FMLA_F32_LANE(acc, b, v, lane) __asm__ volatile("fmla %0.4s, %1.4s, %2.s[%3]" : "+w"(acc) : "w"(b), "w"(v), "i"(lane))
#define SQ_SDOT_LANE(acc, b, v, lane) __asm__ volatile("sdot %0.4s, %1.16b, %2.4b[%3]" : "+w"(acc) : "w"(b), "w"(v), "i"(lane))
#define SQ_SDOT(acc, a, b) __asm__ volatile("sdot %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(a), "w"(b))
#define SQ_SMMLA(acc, a, b) __asm__ volatile("smmla %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(a), "w"(b))
#define SQ_AND(d, a, b) __asm__ volatile("and %0.16b, %1.16b, %2.16b" : "=w"(d) : "w"(a), "w"(b))
#define SQ_SSHR4(d, a) __asm__ volatile("sshr %0.16b, %1.16b, #4" : "=w"(d) : "w"(a))
#define SQ_SHL4(d, a) __asm__ volatile("shl %0.16b, %1.16b, #4" : "=w"(d) : "w"(a))
#define SQ_ST4_S8(p, v) do { vst1q_s8_x4((int8_t *)(p), (v)); (p) = (void *)((int8_t *)(p) + 64); } while (0)
/* stp takes any two registers (st1 of a list needs consecutive ones, which costs moves to assemble) */
#define SQ_STP_S8(p, a, b) __asm__ volatile("stp %q1, %q2, [%0], #32" : "+r"(p) : "w"(a), "w"(b) : "memory")
#define SQ_SUB(d, a, b) __asm__ volatile("sub %0.16b, %1.16b, %2.16b" : "=w"(d) : "w"(a), "w"(b))
#define SQ_ZIP1_32(d, a, b) __asm__ volatile("zip1 %0.4s, %1.4s, %2.4s" : "=w"(d) : "w"(a), "w"(b))
#define SQ_ZIP2_32(d, a, b) __asm__ volatile("zip2 %0.4s, %1.4s, %2.4s" : "=w"(d) : "w"(a), "w"(b))
#define SQ_SMULL_LO(d, a, b) __asm__ volatile("smull %0.8h, %1.8b, %2.8b" : "=w"(d) : "w"(a), "w"(b))
#define SQ_SMULL_HI(d, a, b) __asm__ volatile("smull2 %0.8h, %1.16b, %2.16b" : "=w"(d) : "w"(a), "w"(b))
#define SQ_SADALP(acc, p) __asm__ volatile("sadalp %0.4s, %1.8h" : "+w"(acc) : "w"(p))
#endif

#endif
