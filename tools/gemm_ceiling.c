// The ceiling of the 512-bit GEMM-strip pattern on this CPU, apart from everything mnv2c adds
// (epilogue, calls, caches): the inner reduction loop of the avx512 tier's register blocks,
// written out in assembly and run on hot L1 data, next to an FMA-only loop like
// `codegen::micro::peak`'s, alternating 30 ms windows so both see the same clock.
//
//   gcc -O2 -mavx512f -o /tmp/gemm_ceiling tools/gemm_ceiling.c && /tmp/gemm_ceiling
//
// Blocks (vectors x pixels; per reduction step: `vectors` weight loads, one broadcast load per
// pixel, `vectors x pixels` FMAs):
//   1x14  a 16-channel projection (res2_1 of MobileNetV2): one broadcast per FMA, as a
//         `vbroadcastss` of its own, and (1x14e, what the avx512 tier emits) inside the FMA;
//   2x14  the 2-vector block (32 channels, or 24 = 16 + 8 masked);
//   3x9   the 3-vector block of most layers.
// The weights are zeros and the inputs small, so no value is denormal and none changes.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define K 128 /* reduction steps per call */
#define XS 512 /* bytes from one pixel's inputs to the next (128 channels) */

#define PF(i) "vfmadd213ps %%zmm31, %%zmm30, %%zmm" #i "\n"
static void peak(long n) {
    __asm__ volatile("vxorps %%xmm30, %%xmm30, %%xmm30\n vxorps %%xmm31, %%xmm31, %%xmm31\n"
                     "mov %0, %%rcx\n 1:\n" PF(0) PF(1) PF(2) PF(3) PF(4) PF(5) PF(6) PF(7) PF(8)
                         PF(9) PF(10) PF(11) "dec %%rcx\n jnz 1b\n vzeroupper\n"
                     :
                     : "r"(n)
                     : "rcx", "memory");
}

/* The 1 vector x 14 pixel block, with the per-pixel step STEP(p): the two variants below
 * differ in nothing else. */
#define ONE_VECTOR_X14(name, STEP)                                                             \
    static void name(const float *x, const float *w) {                                        \
        __asm__ volatile("mov %0, %%rsi\n mov %1, %%rdx\n mov %2, %%ecx\n 1:\n"                \
                         "vmovups (%%rdx), %%zmm31\n" STEP(0) STEP(1) STEP(2) STEP(3) STEP(4)   \
                             STEP(5) STEP(6) STEP(7) STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) \
                                 STEP(13)                                                      \
                         "add $4, %%rsi\n add $64, %%rdx\n dec %%ecx\n jnz 1b\n vzeroupper\n"   \
                         :                                                                     \
                         : "r"(x), "r"(w), "r"(K)                                              \
                         : "rsi", "rdx", "rcx", "memory");                                     \
    }

/* A broadcast register per pixel, then the FMA. */
#define B1(p) "vbroadcastss " #p "*512(%%rsi), %%zmm30\n vfmadd231ps %%zmm30, %%zmm31, %%zmm" #p "\n"
ONE_VECTOR_X14(b1x14, B1)

/* The broadcast embedded in the FMA's memory operand. */
#define E1(p) "vfmadd231ps " #p "*512(%%rsi)%{1to16%}, %%zmm31, %%zmm" #p "\n"
ONE_VECTOR_X14(e1x14, E1)

#define B2(p, a, b)                                                                            \
    "vbroadcastss " #p "*512(%%rsi), %%zmm30\n vfmadd231ps %%zmm30, %%zmm28, %%zmm" #a        \
    "\n vfmadd231ps %%zmm30, %%zmm29, %%zmm" #b "\n"
static void b2x14(const float *x, const float *w) {
    __asm__ volatile("mov %0, %%rsi\n mov %1, %%rdx\n mov %2, %%ecx\n 1:\n"
                     "vmovups (%%rdx), %%zmm28\n vmovups 64(%%rdx), %%zmm29\n" B2(0, 0, 1)
                         B2(1, 2, 3) B2(2, 4, 5) B2(3, 6, 7) B2(4, 8, 9) B2(5, 10, 11)
                             B2(6, 12, 13) B2(7, 14, 15) B2(8, 16, 17) B2(9, 18, 19)
                                 B2(10, 20, 21) B2(11, 22, 23) B2(12, 24, 25) B2(13, 26, 27)
                     "add $4, %%rsi\n add $128, %%rdx\n dec %%ecx\n jnz 1b\n vzeroupper\n"
                     :
                     : "r"(x), "r"(w), "r"(K)
                     : "rsi", "rdx", "rcx", "memory");
}

#define B3(p, a, b, c)                                                                         \
    "vbroadcastss " #p "*512(%%rsi), %%zmm30\n vfmadd231ps %%zmm30, %%zmm27, %%zmm" #a        \
    "\n vfmadd231ps %%zmm30, %%zmm28, %%zmm" #b "\n vfmadd231ps %%zmm30, %%zmm29, %%zmm" #c "\n"
static void b3x9(const float *x, const float *w) {
    __asm__ volatile("mov %0, %%rsi\n mov %1, %%rdx\n mov %2, %%ecx\n 1:\n"
                     "vmovups (%%rdx), %%zmm27\n vmovups 64(%%rdx), %%zmm28\n"
                     "vmovups 128(%%rdx), %%zmm29\n" B3(0, 0, 1, 2) B3(1, 3, 4, 5) B3(2, 6, 7, 8)
                         B3(3, 9, 10, 11) B3(4, 12, 13, 14) B3(5, 15, 16, 17) B3(6, 18, 19, 20)
                             B3(7, 21, 22, 23) B3(8, 24, 25, 26)
                     "add $4, %%rsi\n add $192, %%rdx\n dec %%ecx\n jnz 1b\n vzeroupper\n"
                     :
                     : "r"(x), "r"(w), "r"(K)
                     : "rsi", "rdx", "rcx", "memory");
}

/* GFLOP/s of `f` over a 30 ms window. */
static double window(void (*f)(const float *, const float *), const float *x, const float *w,
                     double flops_per_call) {
    double t0 = now(), t;
    long calls = 0;
    while ((t = now()) - t0 < 0.03) {
        f(x, w);
        calls++;
    }
    return calls * flops_per_call / (t - t0) / 1e9;
}

static double peak_window(void) {
    const long steps = 1 << 14;
    double t0 = now(), t;
    long calls = 0;
    while ((t = now()) - t0 < 0.03) {
        peak(steps);
        calls++;
    }
    return calls * 12.0 * 16 * 2 * steps / (t - t0) / 1e9;
}

static int cmp(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

int main(void) {
    float *x = aligned_alloc(64, 14 * XS);
    float *w = aligned_alloc(64, K * 48 * 4);
    for (int i = 0; i < 14 * XS / 4; i++) x[i] = 1e-3f;
    for (int i = 0; i < K * 48; i++) w[i] = 0.0f;
    struct {
        const char *name;
        void (*f)(const float *, const float *);
        double flops;
    } blocks[] = {
        {"1x14 (16 channels)", b1x14, 2.0 * 14 * 16 * K},
        {"1x14e (embedded)", e1x14, 2.0 * 14 * 16 * K},
        {"2x14 (32 channels)", b2x14, 2.0 * 14 * 32 * K},
        {"3x9  (48 channels)", b3x9, 2.0 * 9 * 48 * K},
    };
    enum { ROUNDS = 7 };
    printf("block                GFLOP/s  peak next to it  %% of that peak   (medians of %d "
           "windows)\n",
           ROUNDS);
    for (unsigned b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        double g[ROUNDS], p[ROUNDS], r[ROUNDS];
        for (int i = 0; i < ROUNDS; i++) {
            p[i] = peak_window();
            g[i] = window(blocks[b].f, x, w, blocks[b].flops);
            r[i] = 100.0 * g[i] / p[i];
        }
        qsort(g, ROUNDS, sizeof g[0], cmp);
        qsort(p, ROUNDS, sizeof p[0], cmp);
        qsort(r, ROUNDS, sizeof r[0], cmp);
        printf("%-20s %7.0f  %15.0f  %14.1f%%\n", blocks[b].name, g[ROUNDS / 2], p[ROUNDS / 2],
               r[ROUNDS / 2]);
    }
    free(x);
    free(w);
    return 0;
}
