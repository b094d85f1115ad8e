/// Shared helpers for storing a register tile row: int32 (run_matmul) or dequantized float32 (run_dequant).
#ifndef SQUAT_TILE_STORE_H
#define SQUAT_TILE_STORE_H
#include <string.h>
#include "squat_neon.h"
#include "squat_igemm_interface.h"

/* Column tails go lane by lane from the registers: no stack buffer, no call. */
SQ_ALWAYS_INLINE void sq_store_s32x4(int32_t *c, size_t ncols, int32x4_t a) {
  if (ncols >= 4) { vst1q_s32(c, a); return; }
  _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) if ((size_t)j < ncols) c[j] = vgetq_lane_s32(a, j);
}
SQ_ALWAYS_INLINE void sq_store_s32x8(int32_t *c, size_t ncols, int32x4_t a, int32x4_t b) {
  if (ncols >= 8) { vst1q_s32(c, a); vst1q_s32(c + 4, b); return; }
  sq_store_s32x4(c, ncols, a);
  if (ncols > 4) sq_store_s32x4(c + 4, ncols - 4, b);
}

/// Where a tile's rows go: int32 C (dequant == 0: c, stride) or float32 y (y, stride) dequantized with the fields
/// of a squat_dequant, which sq_out_at advances to the tile's first row (row_scale, row_zp) and column (rowsum,
/// w_scale if per channel, bias, col_scale). Plain fields (no pointer to a struct) so that GCC keeps them in
/// registers. A panel narrower than 8 columns is stored into `tail` (8 x 8 elements of kernel scratch, no stack
/// buffer and no call) and copied out by sq_flush_tail.
typedef struct sq_out {
  int dequant, per_channel, any_zp;
  int32_t *c;
  float *y;
  size_t stride;
  int32_t *tail;
  const int32_t *rowsum, *row_zp;
  const float *w_scale, *bias, *row_scale, *col_scale;
} sq_out;

SQ_ALWAYS_INLINE sq_out sq_out_int(int32_t *c, size_t cs, int32_t *tail) {
  sq_out o = {0, 0, 0, c, NULL, cs, tail, NULL, NULL, NULL, NULL, NULL, NULL};
  return o;
}
SQ_ALWAYS_INLINE sq_out sq_out_dequant(const squat_dequant *dq, float *y, size_t ys, int32_t *tail) {
  sq_out o = {1, dq->w_scale_per_channel, dq->any_zp, NULL, y, ys, tail, dq->rowsum, dq->row_zp, dq->w_scale,
              dq->bias, dq->row_scale, dq->col_scale};
  return o;
}

SQ_ALWAYS_INLINE int32x4_t sq_ld_s32_part(const int32_t *p, size_t n) {
  int32_t t[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < n && i < 4; i++) t[i] = p[i];
  return vld1q_s32(t);
}
SQ_ALWAYS_INLINE float32x4_t sq_ld_f32_part(const float *p, size_t n) {
  float t[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < n && i < 4; i++) t[i] = p[i];
  return vld1q_f32(t);
}
/* 8 values of an N-long per-column array at the tile's columns (zero beyond nc) */
SQ_ALWAYS_INLINE void sq_ld_cols_f32(const float *p, size_t nc, float32x4_t v[2]) {
  if (nc >= 8) { v[0] = vld1q_f32(p); v[1] = vld1q_f32(p + 4); return; }
  v[0] = sq_ld_f32_part(p, nc);
  v[1] = sq_ld_f32_part(p + 4, nc > 4 ? nc - 4 : 0);
}
SQ_ALWAYS_INLINE void sq_ld_cols_s32(const int32_t *p, size_t nc, int32x4_t v[2]) {
  if (nc >= 8) { v[0] = vld1q_s32(p); v[1] = vld1q_s32(p + 4); return; }
  v[0] = sq_ld_s32_part(p, nc);
  v[1] = sq_ld_s32_part(p + 4, nc > 4 ? nc - 4 : 0);
}

/// R rows of 4 NV accumulators (acc[r][0] = columns 0-3, acc[r][1] = 4-7) -> int32 C, or float32 y with
///     y = (float)(acc - zp_r * rowsum) * (s_r * s_w) (+ bias)
/// the integer part wrapping like the accumulators, the float part as three rounded operations (no fma: the
/// Python student rounds the product and the sum separately). Each correction is one block under one branch for
/// the whole tile (zero points all zero: no rowsum term; one scale for every row: the precomputed per-column
/// products; no bias: no add), so a tile costs 2 conversions + 2 multiplies + 1 store per row in the common case.
SQ_ALWAYS_INLINE void sq_store_rows_nv(const int R, const int NV, const sq_out *o, size_t nc, int32x4_t acc[][2]) {
  if (!o->dequant) {
    int32_t *c = o->c;
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++, c += o->stride)
      _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) vst1q_s32(c + 4 * v, acc[r][v]);
    return;
  }
  if (o->any_zp) {
    int32x4_t rs[2];
    sq_ld_cols_s32(o->rowsum, nc, rs);
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
      const int32_t zp = o->row_zp[r];
      _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[r][v] = vmlsq_n_s32(acc[r][v], rs[v], zp);
    }
  }
  float32x4_t f[8][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
    _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) f[r][v] = vcvtq_f32_s32(acc[r][v]);
  float32x4_t t[2];
  if (o->col_scale) {
    sq_ld_cols_f32(o->col_scale, nc, t);
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
      _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) f[r][v] = vmulq_f32(f[r][v], t[v]);
  } else { /* a scale per row (per-token or token-adaptive rows): finish each row before the next, so the 2 R
               products t * s_r never all live at once */
    if (o->per_channel) sq_ld_cols_f32(o->w_scale, nc, t);
    else t[0] = t[1] = vld1q_dup_f32(o->w_scale);
    float32x4_t b[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    if (o->bias) sq_ld_cols_f32(o->bias, nc, b);
    float *y = o->y;
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++, y += o->stride) {
      const float sx = o->row_scale[r];
      _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {
        float32x4_t z = vmulq_f32(f[r][v], vmulq_n_f32(t[v], sx));
        if (o->bias) z = vaddq_f32(z, b[v]);
        vst1q_f32(y + 4 * v, z);
      }
    }
    return;
  }
  if (o->bias) {
    float32x4_t b[2];
    sq_ld_cols_f32(o->bias, nc, b);
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
      _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) f[r][v] = vaddq_f32(f[r][v], b[v]);
  }
  float *y = o->y;
  _Pragma("GCC unroll 8") for (int r = 0; r < R; r++, y += o->stride)
    _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) vst1q_f32(y + 4 * v, f[r][v]);
}
SQ_ALWAYS_INLINE void sq_store_rows(const int R, const sq_out *o, size_t nc, int32x4_t acc[][2]) {
  sq_store_rows_nv(R, 2, o, nc, acc);
}

/// Decode: NV (2, 4 or 8) accumulator vectors of row i, columns p .. p + 4 NV (nc of them exist) -> C or y, with
/// the same arithmetic as sq_store_rows but addressed straight from (i, p), so a GEMV pays only the operations.
/// A narrow last panel goes through `tail` (128 elements: [w_scale | rowsum | bias | y] x 32).
SQ_ALWAYS_INLINE void sq_store_cols(const int NV, const sq_out *o, size_t i, size_t p, size_t nc, int32x4_t acc[][2]) {
#define a_(v) acc[(v) / 2][(v) % 2]
  const int full = nc >= (size_t)(4 * NV);
  if (!o->dequant) {
    int32_t *c = full ? o->c + i * o->stride + p : o->tail;
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) vst1q_s32(c + 4 * v, a_(v));
    if (!full) for (size_t j = 0; j < nc; j++) o->c[i * o->stride + p + j] = o->tail[j];
    return;
  }
  const int32_t *rs = o->rowsum + p;
  const float *sw = o->per_channel ? o->w_scale + p : o->w_scale, *b = o->bias ? o->bias + p : NULL;
  if (!full) { /* the last, narrow panel: copy its columns into zero-padded scratch first */
    float *t = (float *)o->tail;
    int32_t *r = o->tail + 32;
    for (int j = 0; j < 4 * NV; j++) {
      r[j] = (size_t)j < nc ? rs[j] : 0;
      t[j] = (size_t)j < nc ? sw[o->per_channel ? j : 0] : 0.0f;
      t[64 + j] = (b && (size_t)j < nc) ? b[j] : 0.0f;
    }
    rs = r;
    sw = t;
    b = b ? t + 64 : NULL;
  }
  /* each correction tested once for the NV vectors, as in sq_store_rows */
  const int32_t zp = o->any_zp ? o->row_zp[i] : 0;
  if (zp) _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) a_(v) = vmlsq_n_s32(a_(v), vld1q_s32(rs + 4 * v), zp);
  float32x4_t f[8], t[8];
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) f[v] = vcvtq_f32_s32(a_(v));
  const float sx = o->row_scale[i];
  if (o->per_channel || !full) {
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) t[v] = vmulq_n_f32(vld1q_f32(sw + 4 * v), sx);
  } else {
    t[0] = vmulq_n_f32(vld1q_dup_f32(sw), sx);
    _Pragma("GCC unroll 8") for (int v = 1; v < NV; v++) t[v] = t[0];
  }
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) f[v] = vmulq_f32(f[v], t[v]);
  if (b) _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) f[v] = vaddq_f32(f[v], vld1q_f32(b + 4 * v));
  float *y = full ? o->y + i * o->stride + p : (float *)o->tail + 96;
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) vst1q_f32(y + 4 * v, f[v]);
  if (!full) for (size_t j = 0; j < nc; j++) o->y[i * o->stride + p + j] = y[j];
#undef a_
}

/// A panel narrower than 8 columns is stored into the 8 x 8 tail tile (same code, other destination) ...
SQ_ALWAYS_INLINE sq_out sq_out_tail(const sq_out *o) {
  sq_out t = *o;
  t.c = o->tail;
  t.y = (float *)o->tail;
  t.stride = 8;
  return t;
}
/// ... and its first nc columns of R rows copied out afterwards.
SQ_ALWAYS_INLINE void sq_flush_tail(const sq_out *o, size_t R, size_t nc) {
  for (size_t r = 0; r < R; r++)
    for (size_t j = 0; j < nc; j++) {
      if (o->dequant) o->y[r * o->stride + j] = ((const float *)o->tail)[8 * r + j];
      else o->c[r * o->stride + j] = o->tail[8 * r + j];
    }
}

/// The sq_out of the tile at row i0, column p of a call.
SQ_ALWAYS_INLINE sq_out sq_out_at(const sq_out *o, size_t i0, size_t p) {
  sq_out t = *o;
  if (o->dequant) {
    t.rowsum += p;
    if (t.per_channel) t.w_scale += p;
    if (t.bias) t.bias += p;
    if (t.col_scale) t.col_scale += p;
    t.row_scale += i0;
    t.row_zp += i0;
    t.y += i0 * o->stride + p;
  } else {
    t.c += i0 * o->stride + p;
  }
  return t;
}
#endif
