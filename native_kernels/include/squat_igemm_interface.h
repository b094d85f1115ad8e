/// @file squat_igemm_interface.h
/// Interface of every integer GEMM micro-kernel: C_int32[M,N] = sum_k X[m,k] * W[n,k].
/// X: int8 [M,K] row-major (values in the kernel's activation range), W: int8 [N,K] row-major, unpacked
/// (4-bit kernels take values in [-8,7] one per byte; their packer builds the 4-bit layout).
/// Packing is separate from compute: pack_rhs once per weight, pack_lhs once per call, then run_matmul.
/// Callers (including Python) read tile sizes from get_mr/get_nr/get_kr, never hardcode them.
#ifndef SQUAT_IGEMM_INTERFACE_H
#define SQUAT_IGEMM_INTERFACE_H
#include <stddef.h>
#include <stdint.h>
#include "squat_qlinear.h"

/// CPU features a kernel needs (checked at run time by squat_cpu_features()).
enum { SQUAT_FEAT_NEON = 1, SQUAT_FEAT_DOTPROD = 2, SQUAT_FEAT_FP16 = 4, SQUAT_FEAT_I8MM = 8 };

/// Packed weight layouts. Kernels with the same layout read the same packed weights, so one packing serves both
/// a prefill tile and a decode GEMV and the choice between them can be made per call from M.
enum {
  SQUAT_LAYOUT_QS8_C4 = 1,         ///< pack_rhs_qs8_nxk_c4, nr 8 (sdot by lane)
  SQUAT_LAYOUT_QS8_C8 = 2,         ///< pack_rhs_qs8_nxk_c8, nr 8 (smmla; plain sdot over column pairs)
  SQUAT_LAYOUT_QS8_C16_NR4 = 3,    ///< pack_rhs_qs8_nxk_c16, nr 4 (smull + sadalp)
  SQUAT_LAYOUT_QS4_C4 = 4,         ///< pack_rhs_qs4_nxk_c4 (4-bit weights: sdot and smmla prefill, both decodes)
  SQUAT_LAYOUT_QS4X2_MKMP_RSUM = 6,///< pack_rhs_qs4x2_mkmp_rsum_nxk (MKMP lanes + 8 * rowsum head)
  SQUAT_LAYOUT_QS4X2_MKMP = 7,     ///< pack_rhs_qs4x2_mkmp_nxk (MKMP lanes)
};

/// Per-row quantization for a fused LHS packer: row i uses `high` if high_mask && high_mask[i], else `low`;
/// the packer writes the scale and zero point it used to row_scale[i] and row_zp[i].
typedef struct squat_quant_rows {
  const squat_act_site *low, *high;
  const uint8_t *high_mask;
  float *row_scale;
  int32_t *row_zp;
} squat_quant_rows;

/// Dequantization epilogue: y[i,j] = (float)(acc[i,j] - row_zp[i] * rowsum[j]) * (row_scale[i] * w_scale[j or 0])
/// (+ bias[j] if bias), integer part in wrapping int32, float part as three rounded float32 operations.
typedef struct squat_dequant {
  const int32_t *rowsum;
  const float *w_scale;
  int w_scale_per_channel;
  const float *bias;
  const float *row_scale;
  const int32_t *row_zp;
  int any_zp;               ///< 0: every row_zp is 0 (the rowsum correction is skipped)
  const float *col_scale;   ///< optional [N]: row_scale[i] * w_scale[j] when every row has the same scale
} squat_dequant;

typedef struct squat_igemm_ukernel {
  const char *name;         ///< file/symbol stem, see NAMING.md
  const char *precision;    ///< "w8a8", "w4a8" (also runs w4a4 activations), "w4a4" (needs acts in [-8,7])
  int weight_bits;          ///< 8 or 4: range of W accepted by pack_rhs
  int act_bits;             ///< 8 or 4: range of X accepted by pack_lhs
  unsigned features;        ///< SQUAT_FEAT_* required
  size_t (*get_mr)(void);
  size_t (*get_nr)(void);
  size_t (*get_kr)(void);
  size_t (*get_rhs_packed_size)(size_t n, size_t k);
  void (*pack_rhs)(size_t n, size_t k, const int8_t *w, size_t w_stride, void *rhs_packed);
  size_t (*get_lhs_packed_size)(size_t m, size_t k);
  void (*pack_lhs)(size_t m, size_t k, const int8_t *x, size_t x_stride, void *lhs_packed);
  size_t (*get_scratch_size)(size_t m, size_t n, size_t k);
  /// @param[out] c int32 [M, N] with row stride c_stride (elements). scratch: get_scratch_size bytes (may be NULL if 0).
  void (*run_matmul)(size_t m, size_t n, size_t k, const void *lhs_packed, const void *rhs_packed,
                     int32_t *c, size_t c_stride, void *scratch);
  /* Fields below were appended for the fused quantized linear (squat_qlinear.h); the ones above are unchanged. */
  int rhs_layout;           ///< SQUAT_LAYOUT_* of pack_rhs's output
  size_t max_k;             ///< largest K this kernel computes exactly (int32, mod 2^32); 0 = any K
  /// Optional: quantize float rows straight into the packed LHS (same layout and size as pack_lhs writes).
  void (*pack_lhs_quant)(size_t m, size_t k, const float *x, size_t x_stride, const squat_quant_rows *rows,
                         void *lhs_packed);
  /// Optional: run_matmul with the dequantization applied to the accumulators before they are stored.
  void (*run_dequant)(size_t m, size_t n, size_t k, const void *lhs_packed, const void *rhs_packed,
                      const squat_dequant *dq, float *y, size_t y_stride, void *scratch);
} squat_igemm_ukernel;

#endif
