/// Standalone benchmark / instruction-count driver.
///   squat_bench --list
///   squat_bench --kernel NAME -m M -n N -k K [--reps R]      integer or float kernel: pack_lhs + run per rep
///   add --insn when counting instructions (suppresses the value-dependent timing printout)
///   squat_bench --mixed RATIO -m M -n N -k K [--k8 NAME --k4 NAME] [--reps R]   fp32 mixed entry point per rep
/// Prints "ns_per_call=<t>". For instruction counts run it under qemu with the insncount plugin at two rep
/// counts: (count(R2) - count(R1)) / (R2 - R1) is the exact per-call count (setup cancels).
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "squat_api.h"

static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

int main(int argc, char **argv) {
  const char *kname = NULL, *k8n = NULL, *k4n = NULL;
  size_t m = 1, n = 512, k = 512;
  long reps = 10;
  double ratio = -1.0;
  int insn_mode = 0; /* --insn: print nothing value-dependent (printf of a time costs a varying number of insns) */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--list")) {
      for (size_t j = 0; j < squat_igemm_count(); j++) printf("%s %s %d\n", squat_igemm_get(j)->name, squat_igemm_get(j)->precision, squat_igemm_available(j));
      for (size_t j = 0; j < squat_fgemm_count(); j++) printf("%s %s %d\n", squat_fgemm_get(j)->name, squat_fgemm_get(j)->precision, squat_fgemm_available(j));
      return 0;
    }
    if (!strcmp(argv[i], "--insn")) { insn_mode = 1; continue; }
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--kernel")) kname = argv[++i];
    else if (!strcmp(argv[i], "-m")) m = strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "-n")) n = strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "-k")) k = strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--reps")) reps = atol(argv[++i]);
    else if (!strcmp(argv[i], "--mixed")) ratio = atof(argv[++i]);
    else if (!strcmp(argv[i], "--k8")) k8n = argv[++i];
    else if (!strcmp(argv[i], "--k4")) k4n = argv[++i];
  }
  uint64_t s = 12345;
  int8_t *x = malloc(m * k), *w = malloc(n * k);
  for (size_t i = 0; i < m * k; i++) { s = s * 6364136223846793005ull + 1; x[i] = (int8_t)((int)(s >> 33) % 8); }
  for (size_t i = 0; i < n * k; i++) { s = s * 6364136223846793005ull + 1; w[i] = (int8_t)((int)(s >> 33) % 8); }
  double t0, t1;
  if (ratio >= 0.0) {
    int k8 = k8n ? squat_igemm_find(k8n) : squat_igemm_default("w4a8");
    int k4 = k4n ? squat_igemm_find(k4n) : squat_igemm_default("w4a4");
    if (k8 < 0 || k4 < 0 || !squat_igemm_available(k8) || !squat_igemm_available(k4)) { fprintf(stderr, "kernel unavailable\n"); return 2; }
    float *xf = malloc(m * k * 4), *imp = malloc(m * 4), *y = malloc(m * n * 4), *sw = malloc(n * 4);
    for (size_t i = 0; i < m * k; i++) xf[i] = (float)x[i] * 0.37f;
    for (size_t i = 0; i < m; i++) imp[i] = (float)((i * 7919) % 101);
    for (size_t j = 0; j < n; j++) sw[j] = 0.01f;
    void *r8 = malloc(squat_igemm_rhs_size(k8, n, k)), *r4 = malloc(squat_igemm_rhs_size(k4, n, k));
    squat_igemm_pack_rhs(k8, n, k, w, k, r8);
    squat_igemm_pack_rhs(k4, n, k, w, k, r4);
    t0 = now_ns();
    for (long r = 0; r < reps; r++) squat_mixed_linear_f32(m, n, k, xf, k, imp, NULL, ratio, k8, r8, k4, r4, sw, 1, y, n, NULL, NULL);
    t1 = now_ns();
    if (!insn_mode) printf("mixed ratio8=%g k8=%s k4=%s m=%zu n=%zu k=%zu reps=%ld ns_per_call=%.0f\n", ratio, squat_igemm_get(k8)->name,
           squat_igemm_get(k4)->name, m, n, k, reps, (t1 - t0) / reps);
    return 0;
  }
  if (!kname) { fprintf(stderr, "usage: squat_bench --kernel NAME | --mixed RATIO | --list\n"); return 2; }
  int ki = squat_igemm_find(kname);
  if (ki >= 0) {
    if (!squat_igemm_available(ki)) { fprintf(stderr, "kernel %s unavailable on this CPU\n", kname); return 3; }
    void *rhs = malloc(squat_igemm_rhs_size(ki, n, k)), *lhs = malloc(squat_igemm_lhs_size(ki, m, k));
    void *scr = malloc(squat_igemm_scratch_size(ki, m, n, k) + 1);
    int32_t *c = malloc(m * n * 4);
    squat_igemm_pack_rhs(ki, n, k, w, k, rhs);
    t0 = now_ns();
    for (long r = 0; r < reps; r++) {
      squat_igemm_pack_lhs(ki, m, k, x, k, lhs);
      squat_igemm_run(ki, m, n, k, lhs, rhs, c, n, scr);
    }
    t1 = now_ns();
  } else {
    int fi = squat_fgemm_find(kname);
    if (fi < 0) { fprintf(stderr, "unknown kernel %s\n", kname); return 2; }
    if (!squat_fgemm_available(fi)) { fprintf(stderr, "kernel %s unavailable on this CPU\n", kname); return 3; }
    const size_t es = squat_fgemm_get(fi)->elem_size;
    void *xs = calloc(m * k, es), *ws = calloc(n * k, es), *c = malloc(m * n * es);
    for (size_t i = 0; i < m * k; i++) { if (es == 4) ((float *)xs)[i] = x[i] * 0.1f; else ((uint16_t *)xs)[i] = 0x2E66; }
    for (size_t i = 0; i < n * k; i++) { if (es == 4) ((float *)ws)[i] = w[i] * 0.1f; else ((uint16_t *)ws)[i] = 0x2E66; }
    void *rhs = malloc(squat_fgemm_rhs_size(fi, n, k)), *lhs = malloc(squat_fgemm_lhs_size(fi, m, k));
    squat_fgemm_pack_rhs(fi, n, k, ws, k, rhs);
    t0 = now_ns();
    for (long r = 0; r < reps; r++) {
      squat_fgemm_pack_lhs(fi, m, k, xs, k, lhs);
      squat_fgemm_run(fi, m, n, k, lhs, rhs, c, n);
    }
    t1 = now_ns();
  }
  if (!insn_mode) printf("kernel=%s m=%zu n=%zu k=%zu reps=%ld ns_per_call=%.0f\n", kname, m, n, k, reps, (t1 - t0) / reps);
  return 0;
}
