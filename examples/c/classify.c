/*
 * classify: run a .qnet model on images through quadra's C ABI and print the top classes.
 *
 *   classify MODEL INPUT [--out LOGITS] [--threads N] [--size HxW]
 *
 * INPUT is a float32 .npy of shape [N, C, H, W] (or [C, H, W]), C order, little-endian, or
 * a raw file of float32 values in C x H x W order per image (then --size is required).
 * --out writes every image's logits, one after another, as raw little-endian float32.
 * Exit status: 0 on success, 1 on a failure (the message names it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quadra.h"

static int fail(const char *what) {
    fprintf(stderr, "classify: %s\n", what);
    return 1;
}

static int fail_quadra(int code) {
    fprintf(stderr, "classify: error %d: %s\n", code, quadra_last_error());
    return 1;
}

/* Reads a whole file; sets *len. NULL on failure (errno-style message printed). */
static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        unsigned char *bigger = realloc(buf, cap * 2);
        if (!bigger) { free(buf); buf = NULL; break; }
        buf = bigger;
        cap *= 2;
    }
    if (ferror(f)) { perror(path); free(buf); buf = NULL; }
    fclose(f);
    *len = n;
    return buf;
}

/* Parses a version 1/2/3 .npy header of little-endian float32 in C order. Sets the data
 * offset and up to 4 dims; returns the number of dims, or -1 with a message. */
static int npy_header(const unsigned char *b, size_t len, size_t *data, size_t dims[4]) {
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0) return -1;
    size_t hlen, start;
    if (b[6] == 1) { hlen = b[8] | (b[9] << 8); start = 10; }
    else if (len >= 12) { hlen = b[8] | (b[9] << 8) | ((size_t)b[10] << 16) | ((size_t)b[11] << 24); start = 12; }
    else return -1;
    if (start + hlen > len) return -1;
    char h[1024];
    if (hlen >= sizeof h) return -1;
    memcpy(h, b + start, hlen);
    h[hlen] = 0;
    if (!strstr(h, "'descr': '<f4'") || !strstr(h, "'fortran_order': False")) {
        fprintf(stderr, "classify: the .npy must hold little-endian float32 in C order: %s\n", h);
        return -2;
    }
    char *s = strstr(h, "'shape': (");
    if (!s) return -1;
    s += 10;
    int n = 0;
    while (*s && *s != ')') {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s) break;
        if (n == 4) return -1;
        dims[n++] = v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    *data = start + hlen;
    return n;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *input_path = NULL, *out_path = NULL;
    unsigned threads = 1, h = 0, w = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            if (sscanf(argv[++i], "%ux%u", &h, &w) != 2) return fail("--size wants HxW, e.g. 224x224");
        } else if (!model_path) model_path = argv[i];
        else if (!input_path) input_path = argv[i];
        else return fail("usage: classify MODEL INPUT [--out LOGITS] [--threads N] [--size HxW]");
    }
    if (!model_path || !input_path)
        return fail("usage: classify MODEL INPUT [--out LOGITS] [--threads N] [--size HxW]");

    printf("quadra %s\n", quadra_version());
    QuadraModel *model = NULL;
    int rc = quadra_model_open(model_path, &model);
    if (rc != QUADRA_OK) return fail_quadra(rc);
    unsigned c = quadra_model_in_chans(model);

    size_t len = 0, off = 0, dims[4] = {0}, images = 0;
    unsigned char *bytes = read_all(input_path, &len);
    if (!bytes) return 1;
    int nd = npy_header(bytes, len, &off, dims);
    if (nd == -2) return 1;
    if (nd == 4 || nd == 3) {
        size_t *d = nd == 4 ? dims + 1 : dims;
        if (d[0] != c) {
            fprintf(stderr, "classify: %s has %zu channels, the model takes %u\n", input_path, d[0], c);
            return 1;
        }
        h = (unsigned)d[1];
        w = (unsigned)d[2];
        images = nd == 4 ? dims[0] : 1;
    } else if (nd >= 0) {
        return fail("the .npy must be [N, C, H, W] or [C, H, W]");
    } else {
        if (!h || !w) return fail("a raw float32 input needs --size HxW");
        off = 0;
        images = len / (sizeof(float) * c * h * w);
    }

    QuadraSession *session = NULL;
    rc = quadra_session_new(model, h, w, threads, &session);
    if (rc != QUADRA_OK) return fail_quadra(rc);
    size_t in_len = quadra_session_input_len(session), out_len = quadra_session_output_len(session);
    if (images == 0 || off + images * in_len * sizeof(float) != len) {
        fprintf(stderr, "classify: %s holds %zu bytes of data, not whole %ux%ux%u float32 images\n",
                input_path, len - off, c, h, w);
        return 1;
    }
    printf("%zu image(s) %ux%ux%u, %u thread(s), %s kernels\n", images, c, h, w, threads,
           quadra_session_kernels(session));

    float *in = malloc(in_len * sizeof(float));
    float *logits = malloc(out_len * sizeof(float));
    FILE *out = out_path ? fopen(out_path, "wb") : NULL;
    if (!in || !logits || (out_path && !out)) return fail("cannot allocate buffers or open --out");
    for (size_t i = 0; i < images; i++) {
        /* memcpy: the file's bytes need not be aligned for float. */
        memcpy(in, bytes + off + i * in_len * sizeof(float), in_len * sizeof(float));
        rc = quadra_session_run(session, in, in_len, logits, out_len);
        if (rc != QUADRA_OK) return fail_quadra(rc);
        if (out && fwrite(logits, sizeof(float), out_len, out) != out_len) return fail("cannot write --out");
        int top[5];
        int k = out_len < 5 ? (int)out_len : 5;
        for (int t = 0; t < k; t++) {
            int best = -1;
            for (size_t j = 0; j < out_len; j++) {
                int taken = 0;
                for (int u = 0; u < t; u++) taken |= top[u] == (int)j;
                if (!taken && (best < 0 || logits[j] > logits[best])) best = (int)j;
            }
            top[t] = best;
        }
        printf("image %zu:", i);
        for (int t = 0; t < k; t++) printf("  %d (%.3f)", top[t], logits[top[t]]);
        printf("\n");
    }
    if (out && fclose(out) != 0) return fail("cannot write --out");
    quadra_session_free(session);
    quadra_model_free(model);
    free(in);
    free(logits);
    free(bytes);
    return 0;
}
