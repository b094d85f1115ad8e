/// Standalone benchmark / instruction-count driver.
///   squat_bench --list
///   squat_bench --kernel NAME -m M -n N -k K [--reps R]      integer or float kernel: pack_lhs + run per rep
///   add --insn when counting instructions (suppresses the value-dependent timing printout)
///   squat_bench --qlinear -m M -n N -k K --wbits B --abits A [--abits-high H --ratio R] [--kernel NAME]
///               [--features F] [--reps R]    fused quantized linear, float32 in and out (squat_qlinear_run): the
///               activation quantization, the GEMM and the dequantization of one call. --abits-high/--ratio: a
///               token-adaptive site, the first round(R * M) rows spread evenly through the call use the high site
///   squat_bench --float fp16|fp32 -m M -n N -k K [--reps R]   the float kernel for M (decode GEMV at M = 1)
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
  const char *kname = NULL;
  size_t m = 1, n = 512, k = 512;
  long reps = 10;
  double ratio = 0.5;
  int qlinear = 0, wbits = 8, abits = 8, abits_high = 0;
  unsigned features = 0;
  const char *fprec = NULL;
  int insn_mode = 0; /* --insn: print nothing value-dependent (printf of a time costs a varying number of insns) */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--list")) {
      for (size_t j = 0; j < squat_igemm_count(); j++) printf("%s %s %d\n", squat_igemm_get(j)->name, squat_igemm_get(j)->precision, squat_igemm_available(j));
      for (size_t j = 0; j < squat_fgemm_count(); j++) printf("%s %s %d\n", squat_fgemm_get(j)->name, squat_fgemm_get(j)->precision, squat_fgemm_available(j));
      return 0;
    }
    if (!strcmp(argv[i], "--insn")) { insn_mode = 1; continue; }
    if (!strcmp(argv[i], "--qlinear")) { qlinear = 1; continue; }
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--kernel")) kname = argv[++i];
    else if (!strcmp(argv[i], "-m")) m = strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "-n")) n = strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "-k")) k = strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--reps")) reps = atol(argv[++i]);
    else if (!strcmp(argv[i], "--wbits")) wbits = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--abits")) abits = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--abits-high")) abits_high = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ratio")) ratio = atof(argv[++i]);
    else if (!strcmp(argv[i], "--features")) features = (unsigned)strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--float")) fprec = argv[++i];
  }
  uint64_t s = 12345;
  int8_t *x = malloc(m * k), *w = malloc(n * k);
  for (size_t i = 0; i < m * k; i++) { s = s * 6364136223846793005ull + 1; x[i] = (int8_t)((int)(s >> 33) % 8); }
  for (size_t i = 0; i < n * k; i++) { s = s * 6364136223846793005ull + 1; w[i] = (int8_t)((int)(s >> 33) % 8); }
  double t0, t1;
  if (qlinear) {
    for (size_t i = 0; i < n * k; i++) { /* weights in their width's range */
      const int lim = 1 << (wbits - 1);
      w[i] = (int8_t)(((int)w[i] + 8 * lim) % (2 * lim) - lim);
    }
    float *xf = malloc(m * k * 4), *y = malloc(m * n * 4), *sw = malloc(n * 4);
    for (size_t i = 0; i < m * k; i++) { s = s * 6364136223846793005ull + 1; xf[i] = (float)((int)(s >> 40) % 2001 - 1000) / 700.0f; }
    for (size_t j = 0; j < n; j++) sw[j] = 0.01f;
    const int kern = kname ? squat_igemm_find(kname) : -1;
    if (kname && (kern < 0 || !squat_igemm_available((size_t)kern))) { fprintf(stderr, "kernel %s unavailable\n", kname); return 3; }
    void *blob = malloc(kern >= 0 ? squat_qlinear_packed_size_for(kern, n, k) : squat_qlinear_packed_size(n, k, wbits, features));
    int rc = kern >= 0 ? squat_qlinear_pack_for(kern, n, k, wbits, w, k, sw, 1, NULL, blob)
                       : squat_qlinear_pack(n, k, wbits, w, k, sw, 1, NULL, features, blob);
    if (rc) { fprintf(stderr, "pack: %s\n", squat_qlinear_strerror(rc)); return 3; }
    squat_qlinear_act act;
    memset(&act, 0, sizeof act);
    const squat_act_site lo = {SQUAT_ACT_STATIC, abits, -(1 << (abits - 1)), (1 << (abits - 1)) - 1, 0, 0.02f};
    act.low = lo;
    uint8_t *mask = calloc(m + 1, 1);
    if (abits_high) {
      const squat_act_site hi = {SQUAT_ACT_STATIC, abits_high, -(1 << (abits_high - 1)), (1 << (abits_high - 1)) - 1, 0, 0.002f};
      act.high = hi;
      act.high_mask = mask;
      const size_t nh = (size_t)(ratio * (double)m + 0.5);
      for (size_t i = 0; i < nh; i++) mask[i * m / (nh ? nh : 1)] = 1;
    }
    const int bits = abits_high > abits ? abits_high : abits;
    const int used = kern >= 0 ? kern : squat_qlinear_kernel(blob, m, bits);
    if (used < 0) { fprintf(stderr, "kernel choice: %s\n", squat_qlinear_strerror(used)); return 3; }
    const size_t wsz = squat_qlinear_workspace_size(blob, m);
    void *ws = malloc(wsz);
    t0 = now_ns();
    for (long r = 0; r < reps; r++) rc |= squat_qlinear_run_kernel(used, blob, m, xf, k, &act, y, n, ws, wsz, NULL);
    t1 = now_ns();
    if (rc) { fprintf(stderr, "run: %s\n", squat_qlinear_strerror(rc)); return 3; }
    if (!insn_mode) printf("qlinear kernel=%s w%d a%d m=%zu n=%zu k=%zu reps=%ld ns_per_call=%.0f\n", squat_igemm_get((size_t)used)->name,
                           wbits, bits, m, n, k, reps, (t1 - t0) / reps);
    else printf("kernel=%s\n", squat_igemm_get((size_t)used)->name);
    return 0;
  }
  if (fprec) { /* the float kernel for this M: decode GEMV at M = 1, else the prefill tile */
    kname = NULL;
    for (size_t j = 0; j < squat_fgemm_count(); j++) {
      const squat_fgemm_ukernel *u = squat_fgemm_get(j);
      if (!strcmp(u->precision, fprec) && squat_fgemm_available(j) && ((u->get_mr() == 1) == (m == 1))) { kname = u->name; break; }
    }
    if (!kname) { fprintf(stderr, "no %s kernel\n", fprec); return 2; }
    if (insn_mode) printf("kernel=%s\n", kname);
  }
  if (!kname) { fprintf(stderr, "usage: squat_bench --kernel NAME | --qlinear ... | --float fp16|fp32 | --list\n"); return 2; }
  int ki = squat_igemm_find(kname);
  if (ki >= 0) {
    if (!squat_igemm_available(ki)) { fprintf(stderr, "kernel %s unavailable on this CPU\n", kname); return 3; }
    void *rhs = malloc(squat_igemm_rhs_size(ki, n, k)), *lhs = malloc(squat_igemm_lhs_size(ki, m, k) + 16);
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
