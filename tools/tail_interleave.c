// Would the logits GEMV's weight stream hide under conv9_1's compute? A model of the seed
// model's tail in C: conv9_1 (7x7, 320 -> 1280, 1x1, relu6; 2-vector x 12-13-pixel register
// blocks like the avx512 tier's), the global average pool and the logits GEMV (1280 -> 1008
// channels, four 16-channel weight streams at once), run
//   A: layer by layer, as mnv2c runs them at 1 thread (conv9_1 prefetching the first
//      `argv[1]` lines of the logits panel, 16384 = 1 MB by default, like `lower::prefetch`);
//   B: interleaved: per 64-channel chunk, conv9_1's two 32-channel blocks (prefetching the next
//      chunk's 252 KB of logits weights, packed chunk-major, two lines per reduction step), the
//      pool of those channels, then the logits' partial sums over that chunk of the reduction.
// Each output is computed by the same operations in the same order in A and B (checked: the
// logits must be the same bits). Before each timed run: a 48 MB stream (the rest of an
// inference), then conv9_1's weights and input read (as the earlier layers leave them).
//
//   gcc -O3 -march=native -o /tmp/tail_interleave tools/tail_interleave.c
//   /tmp/tail_interleave [lines prefetched in A] [B's prefetch: 0 none, 1 t1, 2 t0, 3 nta]
//
// Measured 2026-12-02 (medians of 41, two runs each): A 0.53-0.58 ms; B 0.55-0.61 (t1, t0 or
// none), 1.21 (nta). Interleaving does not hide the stream here: see docs/performance.md.
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
enum {P=49, K9=320, N9=1280, NL=1008, KC=64};
static float *X, *W9, *B9, *Y9, *POOL, *WL, *WLc, *BL, *OUT, *JUNK;
static size_t JUNKN = 12u<<20; // floats: 48 MB
static int HINT = 1;
// conv9 for 32-channel block cb (2 tiles), all 49 pixels, pixel blocks of 13,12,12,12;
// prefetch `pf_lines` lines from `pf` spread over the steps.
static void conv9_block(int cb, const char *pf, int pf_lines) {
  const float *w0 = W9 + (size_t)(2*cb)*K9*16, *w1 = w0 + K9*16;
  int starts[5] = {0,13,25,37,49};
  int issued = 0;
  for (int b = 0; b < 4; b++) {
    int p0 = starts[b], mr = starts[b+1]-p0;
    __m512 a0[13], a1[13];
    for (int p = 0; p < mr; p++) { a0[p] = _mm512_loadu_ps(B9 + cb*32); a1[p] = _mm512_loadu_ps(B9 + cb*32 + 16); }
    for (int k = 0; k < K9; k++) {
      __m512 v0 = _mm512_loadu_ps(w0 + k*16), v1 = _mm512_loadu_ps(w1 + k*16);
      for (int p = 0; p < mr; p++) { __m512 x = _mm512_set1_ps(X[(p0+p)*K9 + k]); a0[p] = _mm512_fmadd_ps(x, v0, a0[p]); a1[p] = _mm512_fmadd_ps(x, v1, a1[p]); }
      if (pf && HINT && issued < pf_lines) {
        for (int q = 0; q < 2 && issued < pf_lines; q++, issued++) {
          const char *a = pf + 64*(size_t)issued;
          if (HINT == 1) _mm_prefetch(a, _MM_HINT_T1); else if (HINT == 2) _mm_prefetch(a, _MM_HINT_T0); else _mm_prefetch(a, _MM_HINT_NTA);
        }
      }
    }
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(6.0f);
    for (int p = 0; p < mr; p++) {
      _mm512_storeu_ps(Y9 + (p0+p)*N9 + cb*32, _mm512_min_ps(_mm512_max_ps(a0[p], lo), hi));
      _mm512_storeu_ps(Y9 + (p0+p)*N9 + cb*32 + 16, _mm512_min_ps(_mm512_max_ps(a1[p], lo), hi));
    }
  }
}
static void pool(int c0, int c1) {
  for (int c = c0; c < c1; c += 16) { __m512 s = _mm512_setzero_ps(); for (int p = 0; p < P; p++) s = _mm512_add_ps(s, _mm512_loadu_ps(Y9 + p*N9 + c)); _mm512_storeu_ps(POOL + c, _mm512_mul_ps(s, _mm512_set1_ps(1.0f/49))); }
}
// logits over k in [k0, k0+kn): weights panel `w` laid out [tile][kk][16] with tile stride `ts`
static void logits(const float *w, size_t ts, int k0, int kn, int first) {
  for (int t = 0; t < NL/16; t += 4) {
    __m512 a[4];
    for (int j = 0; j < 4 && t+j < NL/16; j++) a[j] = first ? _mm512_loadu_ps(BL + (t+j)*16) : _mm512_loadu_ps(OUT + (t+j)*16);
    int nj = (NL/16 - t) < 4 ? (NL/16 - t) : 4;
    for (int k = 0; k < kn; k++) { __m512 x = _mm512_set1_ps(POOL[k0+k]); for (int j = 0; j < nj; j++) a[j] = _mm512_fmadd_ps(x, _mm512_loadu_ps(w + (t+j)*ts + k*16), a[j]); }
    for (int j = 0; j < nj; j++) _mm512_storeu_ps(OUT + (t+j)*16, a[j]);
  }
}
static void evict(void) { // the rest of an inference: stream through 48 MB, then read conv9's
  // weights and input (as the previous layers' prefetch and output would leave them)
  __m512 s = _mm512_setzero_ps(); for (size_t i = 0; i < JUNKN; i += 16) s = _mm512_add_ps(s, _mm512_load_ps(JUNK + i));
  for (size_t i = 0; i < (size_t)K9*N9; i += 16) s = _mm512_add_ps(s, _mm512_load_ps(W9 + i));
  for (size_t i = 0; i < (size_t)P*K9; i += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(X + i));
  JUNK[0] += _mm512_reduce_add_ps(s) * 0;
}
static float *alloc(size_t n) { float *p = aligned_alloc(64, ((n*4+63)/64)*64); for (size_t i = 0; i < n; i++) p[i] = (float)((i*7919)%1000)/1000.0f - 0.5f; return p; }
static int cmpd(const void*a,const void*b){double d=*(double*)a-*(double*)b;return (d>0)-(d<0);}
int main(int argc, char **argv) {
  int pf_first = argc > 1 ? atoi(argv[1]) : 16384;
  HINT = argc > 2 ? atoi(argv[2]) : 1; // A: lines of the logits panel prefetched during conv9 (mnv2c: 1 MB)
  X = alloc(P*K9); W9 = alloc((size_t)K9*N9); B9 = alloc(N9); Y9 = alloc(P*N9); POOL = alloc(N9);
  WL = alloc((size_t)N9*NL); BL = alloc(NL); OUT = alloc(NL); JUNK = alloc(JUNKN);
  // chunk-major copy for B: [chunk][tile][kk][16]
  WLc = alloc((size_t)N9*NL);
  for (int c = 0; c < N9/KC; c++) for (int t = 0; t < NL/16; t++) for (int kk = 0; kk < KC; kk++)
    memcpy(WLc + ((size_t)c*(NL/16) + t)*KC*16 + kk*16, WL + (size_t)t*N9*16 + (size_t)(c*KC+kk)*16, 64);
  enum {R = 41};
  double ta[R], tb[R], ta9[R], tal[R];
  float outA[NL], outB[NL];
  for (int r = 0; r < R; r++) {
    evict();
    double t0 = now();
    for (int cb = 0; cb < N9/32; cb++) conv9_block(cb, cb == 0 ? (const char*)WL : NULL, cb == 0 ? pf_first : 0);
    double t1 = now();
    pool(0, N9);
    logits(WL, (size_t)N9*16, 0, N9, 1);
    double t2 = now();
    ta[r] = t2 - t0; ta9[r] = t1 - t0; tal[r] = t2 - t1; memcpy(outA, OUT, sizeof outA);
    evict();
    t0 = now();
    for (int c = 0; c < N9/KC; c++) {
      const char *next = c + 1 < N9/KC ? (const char*)(WLc + (size_t)(c+1)*(NL/16)*KC*16) : NULL;
      int lines = (NL/16)*KC*16*4/64; // 4032 lines = 252 KB per chunk
      conv9_block(2*c, next, lines/2);
      conv9_block(2*c+1, next ? next + 64*(size_t)(lines/2) : NULL, lines - lines/2);
      pool(c*KC, (c+1)*KC);
      logits(WLc + (size_t)c*(NL/16)*KC*16, (size_t)KC*16, c*KC, KC, c == 0);
    }
    tb[r] = now() - t0; memcpy(outB, OUT, sizeof outB);
  }
  if (memcmp(outA, outB, sizeof outA)) { printf("outputs differ!\n"); return 1; }
  qsort(ta,R,8,cmpd); qsort(tb,R,8,cmpd); qsort(ta9,R,8,cmpd); qsort(tal,R,8,cmpd);
  printf("A layer by layer: %.3f ms (conv9 %.3f, pool+logits %.3f); B interleaved: %.3f ms  (medians of %d, bit-identical)\n", ta[R/2]*1e3, ta9[R/2]*1e3, tal[R/2]*1e3, tb[R/2]*1e3, R);
}
