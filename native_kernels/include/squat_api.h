/// @file squat_api.h
/// Flat C ABI of libsquat_kernels (what Python's ctypes binding calls). Kernels are addressed by index into
/// two registries (integer and float); tile sizes, packed sizes and feature needs are queried, never assumed.
#ifndef SQUAT_API_H
#define SQUAT_API_H
#include <stddef.h>
#include <stdint.h>
#include "squat_fgemm_interface.h"
#include "squat_igemm_interface.h"
#include "squat_qlinear.h"

const char *squat_build_target(void);           ///< "x86-simde" or "aarch64"
unsigned squat_cpu_features(void);              ///< SQUAT_FEAT_* present on this CPU (all of them under SIMDe)

size_t squat_igemm_count(void);
const squat_igemm_ukernel *squat_igemm_get(size_t i);
int squat_igemm_find(const char *name);         ///< index or -1
int squat_igemm_available(size_t i);            ///< 1 if the CPU has every feature kernel i needs
/// Fastest available kernel for "w8a8", "w4a8" or "w4a4" (-1 if none).
int squat_igemm_default(const char *precision);
/// The same for M rows: at M = 1 the decode kernel that reads the same packed weights, if there is one.
int squat_igemm_default_m(const char *precision, size_t m);
size_t squat_igemm_mr(size_t i);
size_t squat_igemm_nr(size_t i);
size_t squat_igemm_kr(size_t i);
size_t squat_igemm_rhs_size(size_t i, size_t n, size_t k);
size_t squat_igemm_lhs_size(size_t i, size_t m, size_t k);
size_t squat_igemm_scratch_size(size_t i, size_t m, size_t n, size_t k);
void squat_igemm_pack_rhs(size_t i, size_t n, size_t k, const int8_t *w, size_t ws, void *rhs);
void squat_igemm_pack_lhs(size_t i, size_t m, size_t k, const int8_t *x, size_t xs, void *lhs);
/// Largest K kernel i computes exactly (0 = any): squat_igemm_run and squat_igemm_matmul refuse a larger K (-1).
size_t squat_igemm_max_k(size_t i);
int squat_igemm_run(size_t i, size_t m, size_t n, size_t k, const void *lhs, const void *rhs, int32_t *c, size_t cs, void *scratch);
/// Bytes of the workspace squat_igemm_matmul needs (packed LHS + kernel scratch); any alignment is accepted.
size_t squat_igemm_workspace_size(size_t i, size_t m, size_t n, size_t k);
/// Convenience: pack_lhs + run_matmul in a caller-provided workspace (no allocation). 0, or -1 if k > max_k.
int squat_igemm_matmul(size_t i, size_t m, size_t n, size_t k, const int8_t *x, size_t xs, const void *rhs, int32_t *c,
                       size_t cs, void *workspace);

size_t squat_fgemm_count(void);
const squat_fgemm_ukernel *squat_fgemm_get(size_t i);
int squat_fgemm_find(const char *name);
int squat_fgemm_available(size_t i);
size_t squat_fgemm_mr(size_t i);
size_t squat_fgemm_nr(size_t i);
size_t squat_fgemm_kr(size_t i);
size_t squat_fgemm_rhs_size(size_t i, size_t n, size_t k);
size_t squat_fgemm_lhs_size(size_t i, size_t m, size_t k);
void squat_fgemm_pack_rhs(size_t i, size_t n, size_t k, const void *w, size_t ws, void *rhs);
void squat_fgemm_pack_lhs(size_t i, size_t m, size_t k, const void *x, size_t xs, void *lhs);
void squat_fgemm_run(size_t i, size_t m, size_t n, size_t k, const void *lhs, const void *rhs, void *c, size_t cs);

#endif
