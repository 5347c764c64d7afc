/*
 * Every error path of quadra's C ABI: each bad call returns its code, leaves *out NULL and
 * says what was wrong in quadra_last_error(); good calls after bad ones still work.
 *
 *   errors MODEL.qnet SCRATCH_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quadra.h"

static int failures = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "FAILED line %d: %s (last error: %s)\n", __LINE__,   \
                    #cond, quadra_last_error());                                 \
            failures++;                                                          \
        }                                                                        \
    } while (0)

/* The call returned `code` and the last error mentions every given word. */
static int says(int rc, int code, const char *a, const char *b) {
    const char *e = quadra_last_error();
    int ok = rc == code && e && strstr(e, a) && (!b || strstr(e, b));
    if (!ok) fprintf(stderr, "  got %d '%s', want %d with '%s' '%s'\n", rc, e ? e : "(null)", code, a, b ? b : "");
    return ok;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: errors MODEL.qnet SCRATCH_DIR\n");
        return 2;
    }
    const char *path = argv[1];
    char bad_path[4096];
    snprintf(bad_path, sizeof bad_path, "%s/corrupt.qnet", argv[2]);

    CHECK(strcmp(quadra_last_error(), "") == 0);
    CHECK(strlen(quadra_version()) > 0);

    /* Opening. */
    QuadraModel *m = (QuadraModel *)1;
    CHECK(says(quadra_model_open(NULL, &m), QUADRA_E_ARGUMENT, "path is NULL", NULL));
    CHECK(m == NULL);
    CHECK(says(quadra_model_open(path, NULL), QUADRA_E_ARGUMENT, "out is NULL", NULL));
    CHECK(says(quadra_model_open("/nonexistent/model.qnet", &m), QUADRA_E_IO, "/nonexistent/model.qnet", NULL));
    CHECK(says(quadra_model_open(argv[2], &m), QUADRA_E_IO, "not a regular file", NULL));

    size_t len = 0;
    unsigned char *bytes = read_all(path, &len);
    CHECK(bytes != NULL && len > 256);
    if (!bytes) return 1;
    /* A flipped byte in the weights: the checksum catches it, naming the file. */
    unsigned char *copy = malloc(len);
    memcpy(copy, bytes, len);
    copy[len / 2] ^= 0x40;
    FILE *f = fopen(bad_path, "wb");
    CHECK(f && fwrite(copy, 1, len, f) == len);
    if (f) fclose(f);
    CHECK(says(quadra_model_open(bad_path, &m), QUADRA_E_FORMAT, bad_path, "checksum"));
    CHECK(m == NULL);
    CHECK(says(quadra_model_from_bytes(copy, len, &m), QUADRA_E_FORMAT, "model bytes", "checksum"));
    CHECK(says(quadra_model_from_bytes(bytes, 100, &m), QUADRA_E_FORMAT, "shorter than the 128-byte header", NULL));
    CHECK(says(quadra_model_from_bytes(bytes, len - 1, &m), QUADRA_E_FORMAT, "file length", NULL));
    CHECK(says(quadra_model_from_bytes(NULL, len, &m), QUADRA_E_ARGUMENT, "data is NULL", NULL));
    CHECK(says(quadra_model_from_bytes(bytes, len, NULL), QUADRA_E_ARGUMENT, "out is NULL", NULL));
    memcpy(copy, "NOTQNET!", 8);
    CHECK(says(quadra_model_from_bytes(copy, len, &m), QUADRA_E_FORMAT, "bad magic", NULL));

    QuadraModel *model = NULL, *copied = NULL;
    CHECK(quadra_model_open(path, &model) == QUADRA_OK && model);
    CHECK(quadra_model_from_bytes(bytes, len, &copied) == QUADRA_OK && copied);
    free(bytes);  /* the copied model keeps its own bytes */
    if (!model || !copied) return 1;
    unsigned c = quadra_model_in_chans(model), classes = quadra_model_num_classes(model);
    CHECK(c > 0 && classes > 0);
    CHECK(quadra_model_in_chans(NULL) == 0 && quadra_model_num_classes(NULL) == 0);

    /* Sessions. */
    QuadraSession *s = (QuadraSession *)1;
    CHECK(says(quadra_session_new(NULL, 64, 64, 1, &s), QUADRA_E_ARGUMENT, "model is NULL", NULL));
    CHECK(s == NULL);
    CHECK(says(quadra_session_new(model, 64, 64, 1, NULL), QUADRA_E_ARGUMENT, "out is NULL", NULL));
    CHECK(says(quadra_session_new(model, 16, 64, 1, &s), QUADRA_E_SHAPE, "16x64", "at least 32"));
    CHECK(says(quadra_session_new(model, 64, 100000, 1, &s), QUADRA_E_SHAPE, "64x100000", NULL));
    CHECK(says(quadra_session_new(model, 64, 64, 100000, &s), QUADRA_E_ARGUMENT, "100000 threads", NULL));
    CHECK(s == NULL);

    QuadraSession *one = NULL, *two = NULL;
    CHECK(quadra_session_new(model, 32, 48, 1, &one) == QUADRA_OK && one);
    CHECK(quadra_session_new(copied, 32, 48, 0, &two) == QUADRA_OK && two);
    if (!one || !two) return 1;
    size_t in_len = quadra_session_input_len(one), out_len = quadra_session_output_len(one);
    CHECK(in_len == (size_t)c * 32 * 48 && out_len == classes);
    CHECK(quadra_session_input_len(NULL) == 0 && quadra_session_output_len(NULL) == 0);
    CHECK(strlen(quadra_session_kernels(one)) > 0 && strcmp(quadra_session_kernels(NULL), "") == 0);

    float *in = malloc(in_len * sizeof(float)), *out = malloc(out_len * sizeof(float));
    float *out2 = malloc(out_len * sizeof(float));
    for (size_t i = 0; i < in_len; i++) in[i] = (float)((i * 7919) % 255) / 127.0f - 1.0f;
    CHECK(says(quadra_session_run(NULL, in, in_len, out, out_len), QUADRA_E_ARGUMENT, "session is NULL", NULL));
    CHECK(says(quadra_session_run(one, NULL, in_len, out, out_len), QUADRA_E_ARGUMENT, "input is NULL", NULL));
    CHECK(says(quadra_session_run(one, in, in_len, NULL, out_len), QUADRA_E_ARGUMENT, "output is NULL", NULL));
    char want[64];
    snprintf(want, sizeof want, "takes %zu", in_len);
    CHECK(says(quadra_session_run(one, in, in_len - 1, out, out_len), QUADRA_E_ARGUMENT, "input_len", want));
    CHECK(says(quadra_session_run(one, in, in_len, out, out_len + 1), QUADRA_E_ARGUMENT, "output_len", NULL));

    /* After all that, runs work; the model may go before its sessions; threads 0 (all
     * cores) gives the same logits as 1 thread, and so does the copied model. */
    quadra_model_free(model);
    quadra_model_free(copied);
    CHECK(quadra_session_run(one, in, in_len, out, out_len) == QUADRA_OK);
    CHECK(quadra_session_run(two, in, in_len, out2, out_len) == QUADRA_OK);
    CHECK(memcmp(out, out2, out_len * sizeof(float)) == 0);
    int finite = 1;
    for (size_t i = 0; i < out_len; i++) finite &= out[i] == out[i] && out[i] - out[i] == 0.0f;
    CHECK(finite);

    /* Freeing NULL does nothing. */
    quadra_model_free(NULL);
    quadra_session_free(NULL);
    quadra_session_free(one);
    quadra_session_free(two);
    free(in);
    free(out);
    free(out2);
    free(copy);
    remove(bad_path);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("C ABI error paths: all checks passed\n");
    return 0;
}
