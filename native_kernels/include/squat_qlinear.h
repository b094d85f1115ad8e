/// @file squat_qlinear.h
/// Fused quantized linear: float32 activations in, float32 outputs out, integer GEMM in between.
///
///     x  float32 [M, K] (row stride)                     y  float32 [M, N] (row stride)
///       -> quantize each row into the kernel's packed LHS  -> integer GEMM  -> dequantize while storing
///
/// This is the entry point a runtime calls for every quantized nn.Linear of an export (squat/export.py), so it
/// reproduces the Python student bit for bit:
///  - activations: q = clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax), with an IEEE float32
///    divide (fdiv, never a reciprocal multiply: x * (1/s) rounds differently for some x) and fcvtns (round half
///    to even, what torch.round does). `scale` is the site's trained float32 value (static) or, per token,
///    max|x_row| / (qmax - zero_point) clamped below at 1e-8f (dynamic, LLM-QAT), exactly as
///    squat.export.ActSite.quantize computes it. Zero points use the export's signed convention.
///  - outputs: y[m,n] = (float)(acc[m,n] - zp[m] * rowsum(W[n])) * (s_x[m] * s_w[n or 0]) + bias[n], with
///    acc = sum_k q[m,k] * W[n,k]. The integer part is exact (int32 arithmetic, see SQUAT_QL_E_RANGE); the float
///    part is one conversion, one multiply by the float32 product s_x * s_w and one add, each rounded, which is
///    what numpy/torch do in float32 (no fused multiply-add: it would round once and differ).
///
/// Usage (no allocation inside any call; the caller owns every buffer):
///     size_t ps = squat_qlinear_packed_size(n, k, bits, 0);             once per linear, at load time
///     squat_qlinear_pack(n, k, bits, w, k, w_scale, per_channel, bias, 0, blob);
///     size_t ws = squat_qlinear_workspace_size(blob, m_max);            once per maximum token count
///     squat_qlinear_run(blob, m, x, k, &act, y, n, work, ws);           per call
///
/// Kernel choice: the blob records the weight layout chosen for the CPU at pack time; each call then picks the
/// kernel for that layout from M (decode, M = 1, wants a GEMV that streams the weights once; prefill wants a
/// register tile that reuses them across rows) and from the activation width (a <= 4-bit site can use the W4A4
/// kernels). squat_qlinear_kernel() exposes that choice, so benchmarks and tests name what ran.
#ifndef SQUAT_QLINEAR_H
#define SQUAT_QLINEAR_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Activation quantizer modes, mirroring squat.export.ActSite.mode ("static", "dynamic_per_token").
enum { SQUAT_ACT_STATIC = 0, SQUAT_ACT_DYNAMIC_PER_TOKEN = 1 };

/// One activation quantizer (an export "site"). Values are the export's: signed convention, so
/// -2^(bits-1) <= qmin <= qmax <= 2^(bits-1) - 1; an unsigned grid was shifted by 2^(bits-1) and the shift
/// folded into zero_point.
typedef struct squat_act_site {
  int mode;        ///< SQUAT_ACT_STATIC or SQUAT_ACT_DYNAMIC_PER_TOKEN
  int bits;        ///< 2..8; <= 4 lets the call use the 4-bit-activation kernels
  int qmin, qmax;  ///< clamp bounds of q
  int zero_point;  ///< added after rounding; also the per-call correction zp * rowsum(W)
  float scale;     ///< static: the trained float32 scale; ignored for dynamic sites
} squat_act_site;

/// How the M rows of one call are quantized. A token-adaptive site (paper Sec. 5) quantizes its high-precision
/// tokens with `high` and the others with `low`; both groups then go through one GEMM on the same packed weights
/// (the 4-bit-weight kernels take any int8 activation), so nothing is gathered or scattered.
typedef struct squat_qlinear_act {
  squat_act_site low;        ///< every row, or the rows whose high_mask entry is 0
  squat_act_site high;       ///< rows whose high_mask entry is nonzero (ignored when high_mask is NULL)
  const uint8_t *high_mask;  ///< [M] or NULL
} squat_qlinear_act;

/// Return codes (0 = success). squat_qlinear_strerror() gives a one-line message naming the fix.
enum {
  SQUAT_QL_OK = 0,
  SQUAT_QL_E_ARG = -1,        ///< NULL pointer, zero N or K, bad stride
  SQUAT_QL_E_BITS = -2,       ///< weight or activation width outside 2..8, or a weight outside its width's range
  SQUAT_QL_E_SITE = -3,       ///< qmin/qmax/zero_point/scale inconsistent with the site's width and mode
  SQUAT_QL_E_WORKSPACE = -4,  ///< workspace smaller than squat_qlinear_workspace_size(blob, m)
  SQUAT_QL_E_RANGE = -5,      ///< K * max|W| * max|q - zp| >= 2^31: the int32 accumulator could overflow
  SQUAT_QL_E_CPU = -6,        ///< the blob was packed for CPU features this CPU lacks
  SQUAT_QL_E_BLOB = -7,       ///< not a blob written by squat_qlinear_pack (or from another version)
  SQUAT_QL_E_KERNEL = -8,     ///< the requested kernel cannot run this blob / these activations
};
const char *squat_qlinear_strerror(int code);

/// Bytes of the packed-weight blob for an [N, K] weight of `weight_bits` (2..8). Widths 2-4 use the 4-bit-weight
/// kernels (two weights per byte), 5-8 the int8 ones. `features`: SQUAT_FEAT_* the blob may use (it picks the
/// weight layout), 0 = this CPU's (squat_cpu_features()). Returns 0 for an unsupported width.
size_t squat_qlinear_packed_size(size_t n, size_t k, int weight_bits, unsigned features);

/// Pack W (int8 [N, K], nn.Linear order, values within the signed `weight_bits` range), its float32 scales
/// (w_scale[N] if w_scale_per_channel else w_scale[0]) and an optional float32 bias[N] into `packed`
/// (squat_qlinear_packed_size bytes). rowsum(W[n]) is precomputed here so no call pays for it.
int squat_qlinear_pack(size_t n, size_t k, int weight_bits, const int8_t *w, size_t w_stride, const float *w_scale,
                       int w_scale_per_channel, const float *bias, unsigned features, void *packed);

/// Like squat_qlinear_packed_size / squat_qlinear_pack but in the layout of igemm kernel `kernel`
/// (squat_igemm_find), so tests and benchmarks can run any registered kernel through the fused path.
size_t squat_qlinear_packed_size_for(int kernel, size_t n, size_t k);
int squat_qlinear_pack_for(int kernel, size_t n, size_t k, int weight_bits, const int8_t *w, size_t w_stride,
                           const float *w_scale, int w_scale_per_channel, const float *bias, void *packed);

/// The igemm kernel index squat_qlinear_run would use for M rows whose widest site has `act_bits` bits
/// (squat_igemm_get(i)->name names it), or a negative SQUAT_QL_E_* code.
int squat_qlinear_kernel(const void *packed, size_t m, int act_bits);

/// Workspace bytes a call with up to M rows needs, whatever the sites (packed LHS, per-row scales and zero
/// points, kernel scratch). Any alignment is accepted.
size_t squat_qlinear_workspace_size(const void *packed, size_t m);

/// y = dequant(quant(x) @ W^T) as described at the top. Returns 0 or a SQUAT_QL_E_* code, checked before any
/// output is written.
int squat_qlinear_run(const void *packed, size_t m, const float *x, size_t x_stride, const squat_qlinear_act *act,
                      float *y, size_t y_stride, void *workspace, size_t workspace_size);

/// squat_qlinear_run with an explicit kernel (same weight layout as the blob's); `row_scale_out` [M] optionally
/// receives the scale each row was quantized with.
int squat_qlinear_run_kernel(int kernel, const void *packed, size_t m, const float *x, size_t x_stride,
                             const squat_qlinear_act *act, float *y, size_t y_stride, void *workspace,
                             size_t workspace_size, float *row_scale_out);

/// Facts about a blob (what it was packed as).
typedef struct squat_qlinear_info {
  size_t n, k;
  int weight_bits;
  int max_abs_w;       ///< max |W|, for the int32 range check
  int layout;          ///< SQUAT_LAYOUT_* of the packed weights
  unsigned features;   ///< CPU features the blob was packed for
  int per_channel, has_bias;
} squat_qlinear_info;
int squat_qlinear_get_info(const void *packed, squat_qlinear_info *info);

#ifdef __cplusplus
}
#endif
#endif
