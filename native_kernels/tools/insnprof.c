/* Executed-instruction profile for qemu-aarch64 (TCG plugin API v1): like insncount.c, but the count is kept per
   translated block, and at exit "vaddr length instructions" lines (one per block start address, retranslations summed)
   are written to the file named by the plugin argument out=PATH. squat.kernels.disasm maps the addresses to
   functions and to the kernels' inner loops, which gives the per-operation breakdown in docs/kernels.md.
   Usage: qemu-aarch64 -cpu cortex-a76 -plugin libinsnprof.so,out=/tmp/p.txt ./prog */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qemu_plugin_v1.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct tb_count {
  uint64_t vaddr, len, insns; /* insns: executions x block length (len instructions), added inline */
} tb_count;

/* Counters live in fixed chunks (the inline add keeps a pointer to its counter, so nothing may move). */
#define CHUNK 65536
typedef struct chunk {
  struct chunk *next;
  size_t n;
  tb_count c[CHUNK];
} chunk;

static chunk *g_chunks;
static char g_path[4096] = "insnprof.txt";

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  if (!g_chunks || g_chunks->n == CHUNK) {
    chunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->next = g_chunks;
    g_chunks = c;
  }
  tb_count *c = &g_chunks->c[g_chunks->n++];
  c->vaddr = qemu_plugin_tb_vaddr(tb);
  c->len = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &c->insns, qemu_plugin_tb_n_insns(tb));
}

static void at_exit(qemu_plugin_id_t id, void *p) {
  (void)id; (void)p;
  FILE *f = fopen(g_path, "w");
  if (!f) return;
  fprintf(f, "# vaddr len insns\n");
  for (chunk *c = g_chunks; c; c = c->next)
    for (size_t i = 0; i < c->n; i++)
      if (c->c[i].insns) fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", c->c[i].vaddr, c->c[i].len, c->c[i].insns);
  fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++)
    if (!strncmp(argv[i], "out=", 4)) snprintf(g_path, sizeof g_path, "%s", argv[i] + 4);
  qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
