// How fast one core streams the logits' 5 MB weight panel (1280 x 1000 f32) when `OTHER` MB of
// other data were read since the panel's last read, as the rest of the model's weights and
// activations are between two inferences: a model of the logits GEMV's memory side alone
// (the GEMV itself does one FMA per 64-byte line, so it can go no faster than this).
//
//   gcc -O2 -mavx512f -o /tmp/panel_stream tools/panel_stream.c
//   for o in 0 8 14 24; do /tmp/panel_stream $o 4; done      # OTHER MB, weight streams
//
// Each of 41 rounds reads OTHER MB, then times the panel read as STREAMS interleaved
// sequential streams (the avx512 GEMV reads 4, one per 16-channel tile); prints the median.
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

enum { ROUNDS = 41, MAX_STREAMS = 8 };

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s OTHER_MB STREAMS(1-8)\n", argv[0]);
        return 2;
    }
    const size_t panel = 1280 * 1000;
    const size_t other = (size_t)atol(argv[1]) * 1024 * 1024 / 4;
    const int streams = atoi(argv[2]);
    if (streams < 1 || streams > MAX_STREAMS) {
        fprintf(stderr, "STREAMS must be 1-8\n");
        return 2;
    }
    float *p = aligned_alloc(64, panel * 4);
    float *o = aligned_alloc(64, other * 4 + 64);
    for (size_t i = 0; i < panel; i++) p[i] = 1e-3f;
    for (size_t i = 0; i < other; i++) o[i] = 1e-3f;
    double t[ROUNDS];
    volatile float sink = 0;
    const size_t per = panel / streams / 16 * 16;
    for (int r = 0; r < ROUNDS; r++) {
        __m512 s = _mm512_setzero_ps();
        for (size_t i = 0; i < other; i += 16) s = _mm512_add_ps(s, _mm512_load_ps(o + i));
        __m512 acc[MAX_STREAMS];
        for (int k = 0; k < MAX_STREAMS; k++) acc[k] = _mm512_setzero_ps();
        double t0 = now();
        for (size_t i = 0; i < per; i += 16)
            for (int k = 0; k < streams; k++)
                acc[k] = _mm512_fmadd_ps(_mm512_load_ps(p + k * per + i), s, acc[k]);
        t[r] = now() - t0;
        for (int k = 0; k < streams; k++) s = _mm512_add_ps(s, acc[k]);
        sink += _mm512_reduce_add_ps(s);
    }
    qsort(t, ROUNDS, sizeof t[0], cmp);
    double bytes = (double)per * streams * 4;
    printf("other %s MB, %d streams: median %.3f ms (%.1f GB/s)\n", argv[1], streams,
           t[ROUNDS / 2] * 1e3, bytes / t[ROUNDS / 2] / 1e9);
    free(p);
    free(o);
    return 0;
}
