/// Kernel registries and run-time CPU feature checks.
#define _GNU_SOURCE
#include "squat_api.h"
#include <string.h>
#include "squat_neon.h"
#if !defined(SQUAT_SIMDE) && defined(__linux__)
#include <sys/auxv.h>
#endif

extern const squat_igemm_ukernel squat_ukernel_gemm_qs8_qs8_8x8c8_neoni8mm, squat_ukernel_gemm_qs8_qs8_8x8c4_neondot,
    squat_ukernel_gemm_qs8_qs8_1x8c4_neondot, squat_ukernel_gemm_qs8_qs8_1x8c8_neondot,
    squat_ukernel_gemm_qs8_qs8_4x4c8_neon, squat_ukernel_gemm_qs8_qs4_8x8c8_neoni8mm,
    squat_ukernel_gemm_qs8_qs4_8x8c4_neondot, squat_ukernel_gemm_qs8_qs4_1x8c4_neondot,
    squat_ukernel_gemm_qs4_qs4_1x8c4_neondot, squat_ukernel_gemm_qs8_qs4x2_mkmp_4x8_neon,
    squat_ukernel_gemm_qs4_qs4x2_mkmp_4x8_neon;
extern const squat_fgemm_ukernel squat_ukernel_gemm_f32_f32_8x8_neon, squat_ukernel_gemm_f16_f16_8x16_neonfp16arith,
    squat_ukernel_gemm_f32_f32_1x8_neon, squat_ukernel_gemm_f16_f16_1x16_neonfp16arith;

/* Ordered fastest first within each precision and kind (squat_igemm_default and squat_qlinear_kernel take the
   first available match); the decode kernels (M_R = 1) sit after the prefill kernel whose weights they read. */
static const squat_igemm_ukernel *const g_igemm[] = {
  &squat_ukernel_gemm_qs8_qs8_8x8c8_neoni8mm,  &squat_ukernel_gemm_qs8_qs8_8x8c4_neondot,
  &squat_ukernel_gemm_qs8_qs8_1x8c4_neondot,   &squat_ukernel_gemm_qs8_qs8_1x8c8_neondot,
  &squat_ukernel_gemm_qs8_qs8_4x4c8_neon,      &squat_ukernel_gemm_qs8_qs4_8x8c8_neoni8mm,
  &squat_ukernel_gemm_qs8_qs4_8x8c4_neondot,   &squat_ukernel_gemm_qs4_qs4_1x8c4_neondot,
  &squat_ukernel_gemm_qs8_qs4_1x8c4_neondot,   &squat_ukernel_gemm_qs8_qs4x2_mkmp_4x8_neon,
  &squat_ukernel_gemm_qs4_qs4x2_mkmp_4x8_neon,
};
static const squat_fgemm_ukernel *const g_fgemm[] = {
  &squat_ukernel_gemm_f32_f32_8x8_neon, &squat_ukernel_gemm_f16_f16_8x16_neonfp16arith,
  &squat_ukernel_gemm_f32_f32_1x8_neon, &squat_ukernel_gemm_f16_f16_1x16_neonfp16arith,
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *squat_build_target(void) {
#if defined(SQUAT_SIMDE)
  return "x86-simde";
#else
  return "aarch64";
#endif
}

unsigned squat_cpu_features(void) {
#if defined(SQUAT_SIMDE)
  return SQUAT_FEAT_NEON | SQUAT_FEAT_DOTPROD | SQUAT_FEAT_FP16 | SQUAT_FEAT_I8MM;
#elif defined(__linux__)
  static unsigned cached; /* read once: every squat_qlinear_run checks it (a benign race: same value) */
  if (cached) return cached;
  unsigned f = SQUAT_FEAT_NEON;
  unsigned long h1 = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
  if (h1 & (1UL << 20)) f |= SQUAT_FEAT_DOTPROD; /* HWCAP_ASIMDDP */
  if (h1 & (1UL << 10)) f |= SQUAT_FEAT_FP16;    /* HWCAP_ASIMDHP */
  if (h2 & (1UL << 13)) f |= SQUAT_FEAT_I8MM;    /* HWCAP2_I8MM */
  cached = f;
  return f;
#else
  return SQUAT_FEAT_NEON;
#endif
}

size_t squat_igemm_count(void) { return COUNT(g_igemm); }
const squat_igemm_ukernel *squat_igemm_get(size_t i) { return i < COUNT(g_igemm) ? g_igemm[i] : NULL; }
int squat_igemm_find(const char *name) {
  for (size_t i = 0; i < COUNT(g_igemm); i++) if (!strcmp(g_igemm[i]->name, name)) return (int)i;
  return -1;
}
int squat_igemm_available(size_t i) {
  return i < COUNT(g_igemm) && (g_igemm[i]->features & ~squat_cpu_features()) == 0;
}
int squat_igemm_default(const char *precision) {
  /* w4a4 runs on the w4 x int8 kernels (activations in [-8,7] are valid int8): sdot/smmla beat MKMP. */
  const char *want = !strcmp(precision, "w4a4") ? "w4a8" : precision;
  for (size_t i = 0; i < COUNT(g_igemm); i++)
    if (!strcmp(g_igemm[i]->precision, want) && squat_igemm_available(i)) return (int)i;
  return -1;
}
int squat_igemm_default_m(const char *precision, size_t m) {
  /* Like squat_igemm_default, then prefer a decode kernel (M_R = 1) reading the same weights when m == 1:
     smmla at M = 1 spends half its multiplies on a zero row. */
  const int d = squat_igemm_default(precision);
  if (d < 0 || m != 1) return d;
  const int a4 = !strcmp(precision, "w4a4");
  for (size_t i = 0; i < COUNT(g_igemm); i++)
    if (g_igemm[i]->rhs_layout == g_igemm[d]->rhs_layout && g_igemm[i]->get_mr() == 1 && squat_igemm_available(i) &&
        g_igemm[i]->act_bits >= (a4 ? 4 : 8))
      return (int)i;
  return d;
}
size_t squat_igemm_mr(size_t i) { return g_igemm[i]->get_mr(); }
size_t squat_igemm_nr(size_t i) { return g_igemm[i]->get_nr(); }
size_t squat_igemm_kr(size_t i) { return g_igemm[i]->get_kr(); }
size_t squat_igemm_rhs_size(size_t i, size_t n, size_t k) { return g_igemm[i]->get_rhs_packed_size(n, k); }
size_t squat_igemm_lhs_size(size_t i, size_t m, size_t k) { return g_igemm[i]->get_lhs_packed_size(m, k); }
size_t squat_igemm_scratch_size(size_t i, size_t m, size_t n, size_t k) { return g_igemm[i]->get_scratch_size(m, n, k); }
void squat_igemm_pack_rhs(size_t i, size_t n, size_t k, const int8_t *w, size_t ws, void *rhs) { g_igemm[i]->pack_rhs(n, k, w, ws, rhs); }
void squat_igemm_pack_lhs(size_t i, size_t m, size_t k, const int8_t *x, size_t xs, void *lhs) { g_igemm[i]->pack_lhs(m, k, x, xs, lhs); }
size_t squat_igemm_max_k(size_t i) { return g_igemm[i]->max_k; }
int squat_igemm_run(size_t i, size_t m, size_t n, size_t k, const void *lhs, const void *rhs, int32_t *c, size_t cs, void *scratch) {
  if (g_igemm[i]->max_k && k > g_igemm[i]->max_k) return -1;
  g_igemm[i]->run_matmul(m, n, k, lhs, rhs, c, cs, scratch);
  return 0;
}
size_t squat_igemm_workspace_size(size_t i, size_t m, size_t n, size_t k) {
  const squat_igemm_ukernel *u = g_igemm[i];
  return SQ_ROUND_UP(u->get_lhs_packed_size(m, k), 64) + u->get_scratch_size(m, n, k) + 64;
}
int squat_igemm_matmul(size_t i, size_t m, size_t n, size_t k, const int8_t *x, size_t xs, const void *rhs, int32_t *c,
                       size_t cs, void *workspace) {
  const squat_igemm_ukernel *u = g_igemm[i];
  if (u->max_k && k > u->max_k) return -1;
  uint8_t *lhs = workspace, *scr = lhs + SQ_ROUND_UP(u->get_lhs_packed_size(m, k), 64);
  u->pack_lhs(m, k, x, xs, lhs);
  u->run_matmul(m, n, k, lhs, rhs, c, cs, scr);
  return 0;
}

size_t squat_fgemm_count(void) { return COUNT(g_fgemm); }
const squat_fgemm_ukernel *squat_fgemm_get(size_t i) { return i < COUNT(g_fgemm) ? g_fgemm[i] : NULL; }
int squat_fgemm_find(const char *name) {
  for (size_t i = 0; i < COUNT(g_fgemm); i++) if (!strcmp(g_fgemm[i]->name, name)) return (int)i;
  return -1;
}
int squat_fgemm_available(size_t i) {
  return i < COUNT(g_fgemm) && (g_fgemm[i]->features & ~squat_cpu_features()) == 0;
}
size_t squat_fgemm_mr(size_t i) { return g_fgemm[i]->get_mr(); }
size_t squat_fgemm_nr(size_t i) { return g_fgemm[i]->get_nr(); }
size_t squat_fgemm_kr(size_t i) { return g_fgemm[i]->get_kr(); }
size_t squat_fgemm_rhs_size(size_t i, size_t n, size_t k) { return g_fgemm[i]->get_rhs_packed_size(n, k); }
size_t squat_fgemm_lhs_size(size_t i, size_t m, size_t k) { return g_fgemm[i]->get_lhs_packed_size(m, k); }
void squat_fgemm_pack_rhs(size_t i, size_t n, size_t k, const void *w, size_t ws, void *rhs) { g_fgemm[i]->pack_rhs(n, k, w, ws, rhs); }
void squat_fgemm_pack_lhs(size_t i, size_t m, size_t k, const void *x, size_t xs, void *lhs) { g_fgemm[i]->pack_lhs(m, k, x, xs, lhs); }
void squat_fgemm_run(size_t i, size_t m, size_t n, size_t k, const void *lhs, const void *rhs, void *c, size_t cs) {
  g_fgemm[i]->run_matmul(m, n, k, lhs, rhs, c, cs);
}
