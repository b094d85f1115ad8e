/// @file squat_pack.h
/// Packing routines (separate from compute). Each compute file names the packers it uses.
/// Layout names: see NAMING.md. Padding (K to the kernel's K-block, N to NR, M to row pairs) is zero-filled.
#ifndef SQUAT_PACK_H
#define SQUAT_PACK_H
#include <stddef.h>
#include <stdint.h>
#include "squat_igemm_interface.h"

/* RHS, 8-bit weights */
void pack_rhs_qs8_nxk_c4(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out);   /* sdot: [N/nr][Kp/4][nr][4] */
void pack_rhs_qs8_nxk_c8(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out);   /* [N/nr][Kp/8][nr][8] */
void pack_rhs_qs8_nxk_c16(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out);  /* smull: [N/nr][Kp/16][nr][16] */
void pack_rhs_qs8_nxk_c8x2(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int8_t *out); /* smmla: [N/nr][Kp/8][nr/2][2][8] */
/* RHS, 4-bit weights (values [-8,7]) */
/* [N/nr][int32 x nr low-nibble sums][Kp/32][8 vectors: (w[k+16] << 4) | (w[k] + 8) in c4 order], see pack_rhs_qs4_nxk.c */
void pack_rhs_qs4_nxk_c4(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, uint8_t *out);
void pack_rhs_qs4x2_mkmp_nxk(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, int16_t *out); /* [N/nr][Kp][nr/2] int16 lanes */
void pack_rhs_qs4x2_mkmp_rsum_nxk(size_t nr, size_t kp, size_t n, size_t k, const int8_t *w, size_t ws, void *out); /* per panel: [nr] int32 8*rowsum, then lanes */
/* LHS: int8 in (pack_lhs_qs8_*) or float32 quantized on the fly (pack_lhs_quant_*), see pack_lhs_quant.c */
void pack_lhs_qs8_blocked(size_t kc, size_t mr, int pair_pad, size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out);
void pack_lhs_quant_blocked(size_t kc, size_t mr, int pair_pad, size_t kp, size_t m, size_t k, const float *x, size_t xs,
                            const squat_quant_rows *rows, int8_t *out);
void pack_lhs_qs8_rows_dup8(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out);
void pack_lhs_quant_rows_dup8(size_t kp, size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, int8_t *out);
void pack_lhs_qs8_q4lo(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out);
void pack_lhs_quant_q4lo(size_t kp, size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, int8_t *out);
void pack_lhs_qs8_q4yz(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out);
void pack_lhs_quant_q4yz(size_t kp, size_t m, size_t k, const float *x, size_t xs, const squat_quant_rows *rows, int8_t *out);
size_t pack_lhs_q4_head_bytes(size_t m); /* bytes of the per-row int32 head of the q4lo / q4yz layouts */
void pack_lhs_qs8_rows(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out);         /* [M][Kp] */
void pack_lhs_qs8_rowpairs_c8(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int8_t *out);  /* [M/2][Kp/8][2][8] */
void pack_lhs_qs16_rows(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int16_t *out);       /* [M][Kp] widened */
void pack_lhs_qs16_nibsplit(size_t kp, size_t m, size_t k, const int8_t *x, size_t xs, int16_t *out);   /* [M][2][Kp]: hi = x>>4, lo = (x&15)-8 */
void pack_rhs_f32_nxk(size_t nr, size_t kp, size_t n, size_t k, const float *w, size_t ws, float *out);  /* [N/nr][Kp][nr] */
void pack_rhs_f16_nxk(size_t nr, size_t kp, size_t n, size_t k, const uint16_t *w, size_t ws, uint16_t *out);
void pack_lhs_f32_rows(size_t kp, size_t m, size_t k, const float *x, size_t xs, float *out);
/* [blocks of mr rows][kp/kc][R][kc] (element size esz, row stride xs in elements); see pack_lhs.c */
void pack_lhs_blocked(size_t esz, size_t mr, size_t kc, size_t kp, size_t m, size_t k, const void *x, size_t xs, void *out);
void pack_lhs_f16_rows(size_t kp, size_t m, size_t k, const uint16_t *x, size_t xs, uint16_t *out);
#endif
