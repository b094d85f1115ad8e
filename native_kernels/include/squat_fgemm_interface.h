/// @file squat_fgemm_interface.h
/// Interface of the floating-point baseline GEMMs: C[M,N] = sum_k X[m,k] * W[n,k], accumulated with one
/// fused multiply-add per k in ascending k order, in the kernel's own type (fp32 or fp16).
/// Elements are float (fp32 kernel) or IEEE binary16 bit patterns stored in uint16_t (fp16 kernel).
#ifndef SQUAT_FGEMM_INTERFACE_H
#define SQUAT_FGEMM_INTERFACE_H
#include <stddef.h>
#include <stdint.h>

/// Packed weight layouts of the float kernels: same id = the same packed weights (prefill tile and decode GEMV).
enum { SQUAT_FLAYOUT_F32_NR8 = 1, SQUAT_FLAYOUT_F16_NR16 = 2 };

typedef struct squat_fgemm_ukernel {
  const char *name;
  const char *precision;    ///< "fp32" or "fp16"
  size_t elem_size;         ///< 4 or 2
  unsigned features;
  size_t (*get_mr)(void);
  size_t (*get_nr)(void);
  size_t (*get_kr)(void);
  size_t (*get_rhs_packed_size)(size_t n, size_t k);
  void (*pack_rhs)(size_t n, size_t k, const void *w, size_t w_stride, void *rhs_packed);
  size_t (*get_lhs_packed_size)(size_t m, size_t k);
  void (*pack_lhs)(size_t m, size_t k, const void *x, size_t x_stride, void *lhs_packed);
  void (*run_matmul)(size_t m, size_t n, size_t k, const void *lhs_packed, const void *rhs_packed,
                     void *c, size_t c_stride);
  int rhs_layout;           ///< SQUAT_FLAYOUT_* of pack_rhs's output (appended field)
} squat_fgemm_ukernel;

#endif
