/* Deterministic executed-instruction counter for qemu-aarch64 (TCG plugin API v1).
   Each translated block gets an inline "add n_insns" on entry; the total is printed at exit as
   "insns: <count>". Usage: qemu-aarch64 -cpu cortex-a76 -plugin libinsncount.so ./prog */
#include <inttypes.h>
#include <stdio.h>
#include "qemu_plugin_v1.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t insn_count; /* user-mode, single vCPU: the inline add is exact */

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, qemu_plugin_tb_n_insns(tb));
}

static void at_exit(qemu_plugin_id_t id, void *p) {
  (void)id; (void)p;
  char buf[64];
  snprintf(buf, sizeof buf, "insns: %" PRIu64 "\n", insn_count);
  qemu_plugin_outs(buf);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info; (void)argc; (void)argv;
  qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
