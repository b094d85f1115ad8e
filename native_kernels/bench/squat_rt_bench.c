/// Whole-model runner of a runtime bundle (squat_runtime.h): what runs an export without Python, on a device or
/// under qemu-aarch64.
///   squat_rt_bench BUNDLE [--ids FILE | --prefill N] [--decode D] [--reps R] [--out FILE] [--insn]
/// Each rep: reset, prefill the prompt, then D greedy steps (each feeds the argmax back). The prefill computes the
/// logits generation needs, the last prompt token's (an edge runtime does not run the head over the whole prompt);
/// with --out every position's, which it writes.
/// --ids: int32 token ids (raw); --prefill N: ids (i * 7919 + 1) % vocab. --out: the last rep's prefill logits
/// float32 [N, vocab], then the D generated tokens int32. Prints ms_per_prefill and ms_per_decode_token, or
/// nothing value-dependent with --insn (count instructions at two rep or decode counts; setup cancels).
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "squat_runtime.h"

static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }

static int fail(const char *what, int rc) {
  fprintf(stderr, "squat_rt_bench: %s: %s\n", what, squat_rt_strerror(rc));
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: squat_rt_bench BUNDLE [--ids FILE | --prefill N] [--decode D] [--reps R] [--out FILE] [--insn]\n");
    return 2;
  }
  const char *ids_path = NULL, *out_path = NULL;
  long n = 16, decode = 0, reps = 1;
  int insn = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--insn")) { insn = 1; continue; }
    if (i + 1 >= argc) { fprintf(stderr, "squat_rt_bench: %s needs a value\n", argv[i]); return 2; }
    if (!strcmp(argv[i], "--ids")) ids_path = argv[++i];
    else if (!strcmp(argv[i], "--prefill")) n = strtol(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--decode")) decode = strtol(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--reps")) reps = strtol(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--out")) out_path = argv[++i];
    else { fprintf(stderr, "squat_rt_bench: unknown option %s\n", argv[i]); return 2; }
  }
  int rc;
  squat_rt *rt = squat_rt_load_bundle(argv[1], &rc);
  if (!rt) return fail(argv[1], rc);
  const squat_rt_config *c = squat_rt_get_config(rt);
  int32_t *ids = NULL;
  if (ids_path) {
    FILE *f = fopen(ids_path, "rb");
    if (!f) { fprintf(stderr, "squat_rt_bench: cannot open %s\n", ids_path); return 1; }
    fseek(f, 0, SEEK_END);
    n = ftell(f) / 4;
    fseek(f, 0, SEEK_SET);
    ids = malloc((size_t)n * 4 + 4);
    if (!ids || fread(ids, 4, (size_t)n, f) != (size_t)n) { fprintf(stderr, "squat_rt_bench: cannot read %s\n", ids_path); return 1; }
    fclose(f);
  } else {
    ids = malloc((size_t)n * 4 + 4);
    for (long i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 1) % c->vocab);
  }
  const size_t v = (size_t)c->vocab;
  float *logits = malloc((size_t)n * v * sizeof(float)), *last = malloc(v * sizeof(float));
  int32_t *gen = malloc((size_t)(decode > 0 ? decode : 1) * 4);
  if (!logits || !last || !gen) return fail("buffers", SQUAT_RT_E_NOMEM);
  double t_prefill = 0, t_decode = 0;
  for (long r = 0; r < reps; r++) {
    squat_rt_reset(rt);
    double t0 = now_ms();
    const int all = out_path != NULL;
    if ((rc = squat_rt_forward(rt, ids, (size_t)n, all ? logits : last, all))) return fail("prefill", rc);
    double t1 = now_ms();
    const float *row = all ? logits + (size_t)(n - 1) * v : last;
    for (long d = 0; d < decode; d++) {
      int32_t best = 0;
      for (size_t j = 1; j < v; j++) if (row[j] > row[best]) best = (int32_t)j;
      gen[d] = best;
      if ((rc = squat_rt_forward(rt, &best, 1, last, 0))) return fail("decode", rc);
      row = last;
    }
    t_prefill += t1 - t0;
    t_decode += now_ms() - t1;
  }
  if (out_path) {
    FILE *f = fopen(out_path, "wb");
    if (!f || fwrite(logits, sizeof(float), (size_t)n * v, f) != (size_t)n * v ||
        fwrite(gen, 4, (size_t)decode, f) != (size_t)decode) {
      fprintf(stderr, "squat_rt_bench: cannot write %s\n", out_path);
      return 1;
    }
    fclose(f);
  }
  if (!insn) printf("ms_per_prefill=%.4f ms_per_decode_token=%.4f\n", t_prefill / reps, decode ? t_decode / reps / decode : 0.0);
  squat_rt_destroy(rt);
  free(ids); free(logits); free(last); free(gen);
  return 0;
}
