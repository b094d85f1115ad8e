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

/// CPU features a kernel needs (checked at run time by squat_cpu_features()).
enum { SQUAT_FEAT_NEON = 1, SQUAT_FEAT_DOTPROD = 2, SQUAT_FEAT_FP16 = 4, SQUAT_FEAT_I8MM = 8 };

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
} squat_igemm_ukernel;

#endif
