/* Two models compiled with different prefixes (`a`, `b`) in one program: both run, each
 * entry refuses null pointers (1) and misaligned scratch (2) with its documented code, and
 * model `a` runs on several threads at once (each with its own scratch) with the same result.
 * Usage: two_models A_OUT.f32 B_OUT.f32 (each model's output on its synthetic input). */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a.h"
#include "b.h"

static float *input(size_t n, size_t h, size_t w, size_t c) {
    float *x = malloc(sizeof(float) * n * h * w * c);
    if (!x) exit(90);
    size_t i = 0;
    for (size_t b = 0; b < n; b++)
        for (size_t y = 0; y < h; y++)
            for (size_t xx = 0; xx < w; xx++)
                for (size_t ch = 0; ch < c; ch++)
                    x[i++] = (float)sin(0.05 * y + 0.07 * xx + 1.3 * ch + 0.5 * b);
    return x;
}

static int write_f32(const char *path, const float *v, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(v, sizeof(float), n, f) != n) return 1;
    return fclose(f);
}

/* One concurrent caller of a_run: its own scratch and output, several calls. */
struct job {
    const float *x;
    float y[A_OUTPUT_ELEMS];
    int rc;
};

static void *run_a(void *arg) {
    struct job *j = arg;
    void *scratch = aligned_alloc(A_SCRATCH_ALIGN, (A_SCRATCH_BYTES / A_SCRATCH_ALIGN + 1) * A_SCRATCH_ALIGN);
    j->rc = scratch ? 0 : -1;
    for (int i = 0; i < 3 && j->rc == 0; i++) j->rc = a_run(j->x, j->y, scratch);
    free(scratch);
    return NULL;
}

#define CHECK(cond, code) do { if (!(cond)) { fprintf(stderr, "failed: %s\n", #cond); return code; } } while (0)

int main(int argc, char **argv) {
    CHECK(argc == 3, 91);
    CHECK(a_input_elems() == A_INPUT_ELEMS && b_input_elems() == B_INPUT_ELEMS, 92);
    CHECK(a_output_elems() == A_OUTPUT_ELEMS && b_output_elems() == B_OUTPUT_ELEMS, 93);
    CHECK(a_scratch_bytes() == A_SCRATCH_BYTES && b_scratch_bytes() == B_SCRATCH_BYTES, 94);
    float *xa = input(A_INPUT_DIM0, A_INPUT_DIM1, A_INPUT_DIM2, A_INPUT_DIM3);
    float *xb = input(B_INPUT_DIM0, B_INPUT_DIM1, B_INPUT_DIM2, B_INPUT_DIM3);
    float *ya = malloc(sizeof(float) * A_OUTPUT_ELEMS);
    float *yb = malloc(sizeof(float) * B_OUTPUT_ELEMS);
    /* One scratch serves both models in turn: the larger size, the stricter alignment. */
    size_t bytes = A_SCRATCH_BYTES > B_SCRATCH_BYTES ? A_SCRATCH_BYTES : B_SCRATCH_BYTES;
    size_t align = A_SCRATCH_ALIGN > B_SCRATCH_ALIGN ? A_SCRATCH_ALIGN : B_SCRATCH_ALIGN;
    unsigned char *scratch = aligned_alloc(align, (bytes + 2 * align) / align * align);
    CHECK(ya && yb && scratch, 95);

    CHECK(a_run(NULL, ya, scratch) == A_ERR_NULL_POINTER, 10);
    CHECK(a_run(xa, NULL, scratch) == A_ERR_NULL_POINTER, 11);
    CHECK(b_run(xb, yb, NULL) == B_ERR_NULL_POINTER, 12);
    CHECK(a_run(xa, ya, scratch + 4) == A_ERR_MISALIGNED_SCRATCH, 13);
    CHECK(b_run(xb, yb, scratch + align / 2) == B_ERR_MISALIGNED_SCRATCH, 14);
    CHECK(a_run(xa, ya, scratch) == A_OK, 15);
    CHECK(b_run(xb, yb, scratch) == B_OK, 16);
    struct job jobs[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        jobs[i].x = xa;
        CHECK(pthread_create(&threads[i], NULL, run_a, &jobs[i]) == 0, 97);
    }
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0, 98);
        CHECK(jobs[i].rc == A_OK, 17);
        CHECK(memcmp(jobs[i].y, ya, sizeof(float) * A_OUTPUT_ELEMS) == 0, 18);
    }
    CHECK(write_f32(argv[1], ya, A_OUTPUT_ELEMS) == 0 && write_f32(argv[2], yb, B_OUTPUT_ELEMS) == 0, 96);
    puts("ok");
    return 0;
}
