/* A C program that runs a model compiled by `mnv2c compile --emit obj`, written against the
 * generated header alone.
 *
 *   mnv2c compile --model mobilenetv2 --emit obj -o model.o      # also writes model.h
 *   cc -O2 -I. examples/c/main.c model.o -lm -o classify
 *   ./classify [INPUT.npy | INPUT.f32] [--top K] [--out OUT.f32] [--bench RUNS]
 *
 * INPUT is a float32 .npy array or a raw little-endian float32 file with exactly
 * MNV2C_MODEL_INPUT_ELEMS values; without it the program uses mnv2c's synthetic input
 * x[n,y,x,c] = sin(0.05 y + 0.07 x + 1.3 c + 0.5 n). It prints the K most probable classes,
 * writes the raw output with --out, and with --bench times RUNS calls and prints the median.
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

#if MNV2C_MODEL_INPUT_RANK != 4
#error "this example expects an image model: an input of rank 4 (NHWC)"
#endif

static void die(const char *what) {
    fprintf(stderr, "error: %s\n", what);
    exit(1);
}

/* Reads the whole file; sets *len. */
static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open the input file");
    if (fseek(f, 0, SEEK_END) != 0) die("cannot seek the input file");
    long n = ftell(f);
    if (n < 0) die("cannot size the input file");
    rewind(f);
    unsigned char *buf = malloc((size_t)n + 1);
    if (!buf) die("out of memory");
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) die("cannot read the input file");
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The data of a .npy file (version 1-3, '<f4', C order); NULL if it is not one. The element
 * count is checked by the caller against the data size. */
static const unsigned char *npy_data(const unsigned char *buf, size_t len, size_t *data_len) {
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) return NULL;
    size_t hlen, start;
    if (buf[6] == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        start = 10;
    } else {
        if (len < 12) die("truncated .npy header");
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        start = 12;
    }
    if (hlen > len - start) die("truncated .npy header");
    char *header = malloc(hlen + 1);
    if (!header) die("out of memory");
    memcpy(header, buf + start, hlen);
    header[hlen] = 0;
    if (!strstr(header, "'<f4'")) die("the .npy array is not little-endian float32 ('<f4')");
    if (strstr(header, "'fortran_order': True")) die("the .npy array is in Fortran order");
    free(header);
    *data_len = len - start - hlen;
    return buf + start + hlen;
}

static float *read_input(const char *path) {
    size_t len, data_len;
    unsigned char *buf = slurp(path, &len);
    const unsigned char *data = npy_data(buf, len, &data_len);
    if (!data) { /* raw float32 */
        data = buf;
        data_len = len;
    }
    if (data_len != sizeof(float) * MNV2C_MODEL_INPUT_ELEMS)
        die("the input does not have MNV2C_MODEL_INPUT_ELEMS float32 values");
    float *x = malloc(data_len);
    if (!x) die("out of memory");
    memcpy(x, data, data_len);
    free(buf);
    return x;
}

static float *synthetic_input(void) {
    float *x = malloc(sizeof(float) * MNV2C_MODEL_INPUT_ELEMS);
    if (!x) die("out of memory");
    size_t i = 0;
    for (int n = 0; n < MNV2C_MODEL_INPUT_DIM0; n++)
        for (int y = 0; y < MNV2C_MODEL_INPUT_DIM1; y++)
            for (int xx = 0; xx < MNV2C_MODEL_INPUT_DIM2; xx++)
                for (int c = 0; c < MNV2C_MODEL_INPUT_DIM3; c++)
                    x[i++] = (float)sin(0.05 * y + 0.07 * xx + 1.3 * c + 0.5 * n);
    return x;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

/* Runs the model; exits with its return code if it fails. */
static void run(const float *x, float *out, void *scratch) {
    int rc = mnv2c_model_run(x, out, scratch);
    if (rc != MNV2C_MODEL_OK) {
        fprintf(stderr, "error: mnv2c_model_run returned %d\n", rc);
        exit(rc);
    }
}

int main(int argc, char **argv) {
    const char *input = NULL, *out_path = NULL;
    int top = 5, bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--top") && i + 1 < argc) top = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--bench") && i + 1 < argc) bench = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !input) input = argv[i];
        else die("usage: classify [INPUT.npy|INPUT.f32] [--top K] [--out OUT.f32] [--bench RUNS]");
    }
    float *x = input ? read_input(input) : synthetic_input();
    float *out = malloc(sizeof(float) * mnv2c_model_output_elems());
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    size_t align = MNV2C_MODEL_SCRATCH_ALIGN;
    size_t bytes = (mnv2c_model_scratch_bytes() + align - 1) / align * align;
    void *scratch = aligned_alloc(align, bytes ? bytes : align);
    if (!out || !scratch) die("out of memory");
    run(x, out, scratch);

    if (bench > 0) {
        double *t = malloc(sizeof(double) * (size_t)bench);
        if (!t) die("out of memory");
        for (int i = 0; i < bench; i++) {
            double start = now_ms();
            run(x, out, scratch);
            t[i] = now_ms() - start;
        }
        qsort(t, (size_t)bench, sizeof(double), by_value);
        printf("median %.3f ms over %d runs (min %.3f ms)\n", t[bench / 2], bench, t[0]);
        free(t);
    }
    if (out_path) {
        FILE *f = fopen(out_path, "wb");
        if (!f || fwrite(out, sizeof(float), mnv2c_model_output_elems(), f) != mnv2c_model_output_elems())
            die("cannot write the output file");
        fclose(f);
    }
    /* The top classes of each batch item. */
    size_t classes = MNV2C_MODEL_OUTPUT_ELEMS / MNV2C_MODEL_INPUT_DIM0;
    for (size_t item = 0; item < (size_t)MNV2C_MODEL_INPUT_DIM0; item++) {
        const float *p = out + item * classes;
        printf("item %zu:\n", item);
        char *taken = calloc(classes, 1);
        if (!taken) die("out of memory");
        for (int r = 0; r < top && (size_t)r < classes; r++) {
            size_t best = classes;
            for (size_t c = 0; c < classes; c++)
                if (!taken[c] && (best == classes || p[c] > p[best])) best = c;
            taken[best] = 1;
            printf("  %2d. class %4zu  p = %.6f\n", r + 1, best, p[best]);
        }
        free(taken);
    }
    free(scratch);
    free(out);
    free(x);
    return 0;
}
