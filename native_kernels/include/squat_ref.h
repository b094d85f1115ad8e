/// @file squat_ref.h
/// Scalar references: the oracle for every SIMD kernel (C tests) and mirrored in Python (squat/kernels/reference.py).
#ifndef SQUAT_REF_H
#define SQUAT_REF_H
#include <stddef.h>
#include <stdint.h>
#include "squat_qlinear.h"

/// C[m,n] = sum_k X[m,k] * W[n,k], accumulated in int64 then narrowed (exact for every shape the kernels accept).
void ref_gemm_qs8_qs8(size_t m, size_t n, size_t k, const int8_t *x, size_t xs, const int8_t *w, size_t ws,
                      int32_t *c, size_t cs);
/// Scalar emulation of the MKMP arithmetic itself (16-bit lanes holding two rows' 4-bit weights, 32-bit
/// widening accumulation, field split every SQUAT_MKMP_KB steps). acts must be in [-8,7] unless nibble_split.
void ref_gemm_mkmp(size_t m, size_t n, size_t k, const int8_t *x, size_t xs, const int8_t *w, size_t ws,
                   int32_t *c, size_t cs, int nibble_split);
/// fp32: one fmaf per k, ascending k (the order the NEON kernel uses per output element).
void ref_gemm_f32(size_t m, size_t n, size_t k, const float *x, size_t xs, const float *w, size_t ws, float *c, size_t cs);
/// fp16 (binary16 bit patterns): one fused multiply-add rounded to fp16 per k, ascending k.
void ref_gemm_f16(size_t m, size_t n, size_t k, const uint16_t *x, size_t xs, const uint16_t *w, size_t ws,
                  uint16_t *c, size_t cs);

/// Activation quantization as squat.export.ActSite.quantize: the row's scale, and one value's q.
float ref_act_row_scale(const squat_act_site *s, size_t k, const float *x);
int ref_act_quantize(float x, float scale, const squat_act_site *s);
/// The fused quantized linear (squat_qlinear_run): quantize each row with its site, integer matmul in int64,
/// y = (float)sum_k (q - zp) w * (s_x * s_w) (+ bias). row_scale [m] (optional) receives each row's scale.
void ref_qlinear(size_t m, size_t n, size_t k, const float *x, size_t xs, const squat_qlinear_act *act,
                 const int8_t *w, size_t ws, const float *w_scale, int w_scale_per_channel, const float *bias,
                 float *y, size_t ys, float *row_scale);

#define SQUAT_MKMP_SHIFT 11
#define SQUAT_MKMP_KB 16
#endif
