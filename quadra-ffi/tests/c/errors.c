/*
 * Every error path of quadra's C ABI: each bad call returns its code, leaves *out NULL and
 * says what was wrong in quadra_last_error(); good calls after bad ones still work.
 *
 *   errors MODEL.qnet SCRATCH_DIR
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
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

/* Two threads running one session at once: each call either runs (and gives exactly the
 * logits of a lone run) or returns QUADRA_E_BUSY; nothing else, and no garbage. */
struct racer {
    QuadraSession *s;
    const float *in;
    size_t in_len, out_len;
    const float *want;
    int ok, busy, wrong;
};

static void *race(void *arg) {
    struct racer *r = arg;
    float *out = malloc(r->out_len * sizeof(float));
    for (int i = 0; i < 300; i++) {
        int rc = quadra_session_run(r->s, r->in, r->in_len, out, r->out_len);
        if (rc == QUADRA_OK && memcmp(out, r->want, r->out_len * sizeof(float)) == 0) r->ok++;
        else if (rc == QUADRA_E_BUSY && strstr(quadra_last_error(), "another thread")) r->busy++;
        else r->wrong++;
    }
    free(out);
    return NULL;
}

/* A thread-exit destructor (a pthread key's, run after the thread's Rust thread-locals
 * may be gone) that makes a failing call and reads the error: no panic may escape. */
static pthread_key_t exit_key;
static int exit_rc = 1;
static int exit_msg_ok = 0;

static void at_thread_exit(void *p) {
    (void)p;
    QuadraModel *m = NULL;
    exit_rc = quadra_model_open(NULL, &m);
    const char *e = quadra_last_error();
    exit_msg_ok = e != NULL && strlen(e) > 0;
}

static void *exiting_thread(void *arg) {
    (void)arg;
    /* Touch the error store first so Rust's thread-local exists and is destroyed at exit. */
    QuadraModel *m = NULL;
    quadra_model_open(NULL, &m);
    pthread_setspecific(exit_key, (void *)1);
    return NULL;
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
    CHECK(says(quadra_session_new(model, 64, 64, QUADRA_MAX_THREADS + 1, &s), QUADRA_E_ARGUMENT, "at most", "bands"));
    CHECK(s == NULL);
    /* Cores: a policy, a list, and what cannot be satisfied. */
    CHECK(says(quadra_session_new_on(model, 64, 64, 0, "biggest", &s), QUADRA_E_ARGUMENT, "unknown cores 'biggest'", NULL));
    CHECK(says(quadra_session_new_on(model, 64, 64, 0, "1023", &s), QUADRA_E_ARGUMENT, "CPU 1023 is not an online CPU", NULL));
    CHECK(says(quadra_session_new_on(model, 64, 64, 0, "3-1", &s), QUADRA_E_ARGUMENT, "descending", NULL));
    CHECK(s == NULL);
    QuadraSession *on0 = NULL;
    CHECK(quadra_session_new_on(model, 32, 32, 0, "0", &on0) == QUADRA_OK && on0);
    uint32_t ids[4] = {99, 99, 99, 99};
    CHECK(quadra_session_cores(on0, ids, 4) == 1 && ids[0] == 0 && ids[1] == 99);
    CHECK(quadra_session_pinned(on0) == 0); /* one thread: no worker to pin */
    CHECK(strstr(quadra_session_describe(on0), "1 thread") != NULL);
    CHECK(quadra_session_cores(NULL, ids, 4) == 0 && quadra_session_pinned(NULL) == 0);
    CHECK(strcmp(quadra_session_describe(NULL), "") == 0);
    quadra_session_free(on0);
    /* Precision: "f32" or "fp16", else an argument error naming it. fp16 runs where the CPU
       has FEAT_FP16 (qemu's aarch64 does); elsewhere f32, and the description says so. */
    CHECK(says(quadra_model_set_precision(NULL, "fp16"), QUADRA_E_ARGUMENT, "model is NULL", NULL));
    CHECK(says(quadra_model_set_precision(model, NULL), QUADRA_E_ARGUMENT, "precision is NULL", NULL));
    CHECK(says(quadra_model_set_precision(model, "f16"), QUADRA_E_ARGUMENT, "unknown precision 'f16'", "f32 or fp16"));
    CHECK(quadra_model_set_precision(model, "fp16") == QUADRA_OK);
    QuadraSession *half = NULL;
    CHECK(quadra_session_new(model, 32, 32, 1, &half) == QUADRA_OK && half);
    CHECK(strstr(quadra_session_kernels(half), "+fp16") != NULL ||
          strstr(quadra_session_describe(half), "fp16 requested, running f32") != NULL);
    quadra_session_free(half);
    CHECK(quadra_model_set_precision(model, "f32") == QUADRA_OK);
    /* A bad QUADRA_KERNEL is the caller's setting: an argument error naming it. */
    setenv("QUADRA_KERNEL", "bogus", 1);
    CHECK(says(quadra_model_open(path, &m), QUADRA_E_ARGUMENT, "bogus", NULL));
    unsetenv("QUADRA_KERNEL");
    CHECK(m == NULL);

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

    /* One session used from two threads at once (the docs forbid it): every call either
     * gives the right logits or QUADRA_E_BUSY. Both a 1-thread and a 2-thread session. */
    QuadraSession *shared[2] = {one, two};
    for (int k = 0; k < 2; k++) {
        struct racer r[2];
        pthread_t t[2];
        for (int i = 0; i < 2; i++) {
            r[i] = (struct racer){shared[k], in, in_len, out_len, out, 0, 0, 0};
            CHECK(pthread_create(&t[i], NULL, race, &r[i]) == 0);
        }
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        CHECK(r[0].wrong == 0 && r[1].wrong == 0);
        CHECK(r[0].ok + r[1].ok > 0);
        printf("session shared by two threads (%d thread(s)): %d runs, %d refused as busy, %d wrong\n",
               k + 1, r[0].ok + r[1].ok, r[0].busy + r[1].busy, r[0].wrong + r[1].wrong);
    }

    /* A failing call and quadra_last_error() from a thread-exit destructor. */
    CHECK(pthread_key_create(&exit_key, at_thread_exit) == 0);
    pthread_t ex;
    CHECK(pthread_create(&ex, NULL, exiting_thread, NULL) == 0);
    pthread_join(ex, NULL);
    CHECK(exit_rc == QUADRA_E_ARGUMENT && exit_msg_ok);
    pthread_key_delete(exit_key);

    /* A model file rewritten in place under its session (the docs say: replace it by
     * rename): the next run is a format error naming the file, not a crash. */
    char live_path[4096];
    snprintf(live_path, sizeof live_path, "%s/live.qnet", argv[2]);
    bytes = read_all(path, &len);
    FILE *lf = fopen(live_path, "wb");
    CHECK(bytes && lf && fwrite(bytes, 1, len, lf) == len);
    if (lf) fclose(lf);
    QuadraModel *live = NULL;
    QuadraSession *ls = NULL;
    CHECK(quadra_model_open(live_path, &live) == QUADRA_OK);
    CHECK(quadra_session_new(live, 32, 48, 1, &ls) == QUADRA_OK);
    CHECK(quadra_session_run(ls, in, in_len, out2, out_len) == QUADRA_OK);
    lf = fopen(live_path, "r+b");
    CHECK(lf && fwrite("NOTQNET!", 1, 8, lf) == 8);
    if (lf) fclose(lf);
    CHECK(says(quadra_session_run(ls, in, in_len, out2, out_len), QUADRA_E_FORMAT, live_path, "changed while in use"));
    quadra_session_free(ls);
    quadra_model_free(live);
    free(bytes);
    remove(live_path);

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
