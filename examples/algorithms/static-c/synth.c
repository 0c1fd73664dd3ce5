/* A tiny SynthRAD-compatible algorithm: MR/CBCT intensities -> HU inside the body mask.
 *
 * Static binary for a FROM-scratch image. Reads every uncompressed MetaImage (.mha) under
 * /input/images/mri and /input/images/cbct (the platform provisions inputs uncompressed),
 * the body mask of the same name under /input/images/body, and writes a float32 sCT with
 * the same geometry to /output/images/synthetic-ct/<same name>.
 *
 * --mode=NAME (or SYNTH_MODE=NAME) turns it into one of the failure examples used by the platform's tests:
 * crash, sleep, oom, wrong-geometry, no-output, nan; slow (sleeps SYNTH_SLEEP_S seconds,
 * default 5, then works normally); and skip-some (the cherry-picker: works normally but writes
 * nothing for cases whose name ends in an odd digit).
 * Trivial outputs, the floor every real algorithm must beat on a leaderboard: zeros (0 HU
 * everywhere), copy (the input's intensities unchanged), soft-tissue (a constant 40 HU).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_HEADER 64

typedef struct {
    char lines[MAX_HEADER][512];
    int nlines;
    long dims[3];
    int ndims;
    char etype[32];
    int compressed;
    float *data; /* converted to float */
    size_t n;
} Image;

static void die(const char *msg, const char *arg) {
    fprintf(stderr, "error: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    exit(2);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == ' ')) s[--l] = 0;
    return s;
}

static size_t esize(const char *t) {
    if (!strcmp(t, "MET_UCHAR") || !strcmp(t, "MET_CHAR")) return 1;
    if (!strcmp(t, "MET_SHORT") || !strcmp(t, "MET_USHORT")) return 2;
    if (!strcmp(t, "MET_INT") || !strcmp(t, "MET_UINT") || !strcmp(t, "MET_FLOAT")) return 4;
    if (!strcmp(t, "MET_DOUBLE")) return 8;
    return 0;
}

static double elem(const unsigned char *p, const char *t) {
    if (!strcmp(t, "MET_UCHAR")) return *(const uint8_t *)p;
    if (!strcmp(t, "MET_CHAR")) return *(const int8_t *)p;
    if (!strcmp(t, "MET_SHORT")) { int16_t v; memcpy(&v, p, 2); return v; }
    if (!strcmp(t, "MET_USHORT")) { uint16_t v; memcpy(&v, p, 2); return v; }
    if (!strcmp(t, "MET_INT")) { int32_t v; memcpy(&v, p, 4); return v; }
    if (!strcmp(t, "MET_UINT")) { uint32_t v; memcpy(&v, p, 4); return v; }
    if (!strcmp(t, "MET_FLOAT")) { float v; memcpy(&v, p, 4); return v; }
    double v; memcpy(&v, p, 8); return v;
}

static void read_mha(const char *path, Image *im) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open", path);
    memset(im, 0, sizeof *im);
    char buf[512];
    int done = 0;
    while (!done && fgets(buf, sizeof buf, f)) {
        char *eq = strchr(buf, '=');
        if (!eq) die("not a MetaImage header", path);
        char key[128];
        size_t kl = (size_t)(eq - buf);
        if (kl >= sizeof key) die("header key too long", path);
        memcpy(key, buf, kl); key[kl] = 0;
        char *k = trim(key), *v = trim(eq + 1);
        if (!strcmp(k, "NDims")) im->ndims = atoi(v);
        else if (!strcmp(k, "DimSize"))
            sscanf(v, "%ld %ld %ld", &im->dims[0], &im->dims[1], &im->dims[2]);
        else if (!strcmp(k, "ElementType")) snprintf(im->etype, sizeof im->etype, "%s", v);
        else if (!strcmp(k, "CompressedData")) im->compressed = !strcmp(v, "True");
        else if (!strcmp(k, "BinaryDataByteOrderMSB") && !strcmp(v, "True"))
            die("big-endian MetaImage is not supported", path);
        else if (!strcmp(k, "ElementNumberOfChannels") && atoi(v) != 1)
            die("multi-channel images are not supported", path);
        if (!strcmp(k, "ElementDataFile")) {
            if (strcmp(v, "LOCAL")) die("only .mha with ElementDataFile = LOCAL", path);
            done = 1;
        } else if (strcmp(k, "ElementType") && strcmp(k, "CompressedData") &&
                   strcmp(k, "CompressedDataSize")) {
            if (im->nlines >= MAX_HEADER) die("header too long", path);
            snprintf(im->lines[im->nlines++], 512, "%s = %s", k, v);
        }
    }
    if (!done) die("header without ElementDataFile", path);
    if (im->compressed) die("compressed MetaImage; write it uncompressed (the platform does)", path);
    if (im->ndims != 3) die("expected a 3-D image", path);
    size_t es = esize(im->etype);
    if (!es) die("unsupported ElementType", im->etype);
    im->n = (size_t)im->dims[0] * (size_t)im->dims[1] * (size_t)im->dims[2];
    unsigned char *raw = malloc(im->n * es);
    im->data = malloc(im->n * sizeof(float));
    if (!raw || !im->data) die("out of memory", path);
    if (fread(raw, es, im->n, f) != im->n) die("truncated image data", path);
    for (size_t i = 0; i < im->n; i++) im->data[i] = (float)elem(raw + i * es, im->etype);
    free(raw);
    fclose(f);
}

static void write_mha(const char *path, const Image *im, const float *data, int wrong_geometry) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create", path);
    for (int i = 0; i < im->nlines; i++) {
        if (wrong_geometry && !strncmp(im->lines[i], "ElementSpacing = ", 17)) {
            double s[3] = {1, 1, 1};
            sscanf(im->lines[i] + 17, "%lf %lf %lf", &s[0], &s[1], &s[2]);
            fprintf(f, "ElementSpacing = %g %g %g\n", 2 * s[0], 2 * s[1], 2 * s[2]);
        } else {
            fprintf(f, "%s\n", im->lines[i]);
        }
    }
    fprintf(f, "CompressedData = False\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n");
    if (fwrite(data, sizeof(float), im->n, f) != im->n) die("write failed", path);
    if (fclose(f)) die("write failed", path);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* MR -> HU: intensities normalised by the 99th percentile inside the mask, then a
 * piecewise-linear map (dark = air/fat, mid = soft tissue, bright = dense). */
static void synthesize(const Image *mr, const Image *mask, float *out, int nan_mode) {
    size_t inside = 0;
    float *vals = malloc(mr->n * sizeof(float));
    if (!vals) die("out of memory", NULL);
    for (size_t i = 0; i < mr->n; i++)
        if (!mask || mask->data[i] > 0.5f) vals[inside++] = mr->data[i];
    float p99 = 1.0f;
    if (inside) {
        qsort(vals, inside, sizeof(float), cmp_float);
        p99 = vals[(size_t)(0.99 * (double)(inside - 1))];
        if (p99 <= 0) p99 = 1.0f;
    }
    free(vals);
    for (size_t i = 0; i < mr->n; i++) {
        if (mask && mask->data[i] <= 0.5f) { out[i] = -1000.0f; continue; }
        float t = mr->data[i] / p99;
        if (t < 0) t = 0;
        if (t > 1.5f) t = 1.5f;
        out[i] = t < 0.2f ? -1000.0f + t * 4500.0f : -100.0f + (t - 0.2f) * 250.0f;
        if (nan_mode && i % 7 == 0) out[i] = NAN;
    }
}

/* The trivial modes replace the synthesis with a constant or the input itself. */
static void trivial(const char *mode, const Image *mr, float *out) {
    int zeros = !strcmp(mode, "zeros"), soft = !strcmp(mode, "soft-tissue");
    if (!zeros && !soft && strcmp(mode, "copy")) return;
    for (size_t i = 0; i < mr->n; i++) out[i] = zeros ? 0.0f : soft ? 40.0f : mr->data[i];
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static void mkdirs(const char *p) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", p);
    for (char *c = tmp + 1; *c; c++)
        if (*c == '/') { *c = 0; mkdir(tmp, 0755); *c = '/'; }
    if (mkdir(tmp, 0755) && errno != EEXIST) die("cannot create directory", p);
}

int main(int argc, char **argv) {
    const char *mode = getenv("SYNTH_MODE") ? getenv("SYNTH_MODE") : "map";
    const char *in_root = getenv("SYNTH_INPUT") ? getenv("SYNTH_INPUT") : "/input";
    const char *out_root = getenv("SYNTH_OUTPUT") ? getenv("SYNTH_OUTPUT") : "/output";
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--mode=", 7)) mode = argv[i] + 7;
    fprintf(stdout, "synth: mode=%s\n", mode);
    fflush(stdout);
    if (!strcmp(mode, "crash")) {
        fprintf(stderr, "Traceback (simulated): model weights not found\n");
        return 3;
    }
    if (!strcmp(mode, "sleep")) {
        for (;;) { struct timespec ts = {3600, 0}; nanosleep(&ts, NULL); }
    }
    if (!strcmp(mode, "oom")) {
        for (size_t total = 0;; total += 32u << 20) {
            char *p = malloc(32u << 20);
            if (!p) return 4;
            memset(p, 1, 32u << 20);
            fprintf(stdout, "allocated %zu MiB\n", (total >> 20) + 32);
            fflush(stdout);
        }
    }
    if (!strcmp(mode, "slow")) {
        struct timespec ts = {getenv("SYNTH_SLEEP_S") ? atol(getenv("SYNTH_SLEEP_S")) : 5, 0};
        nanosleep(&ts, NULL);
    }
    int wrong = !strcmp(mode, "wrong-geometry"), nan_mode = !strcmp(mode, "nan");
    const char *modalities[] = {"mri", "cbct"};
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/images/synthetic-ct", out_root);
    int count = 0;
    for (int m = 0; m < 2; m++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/images/%s", in_root, modalities[m]);
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!ends_with(e->d_name, ".mha")) continue;
            char in_path[2048], mask_path[2048], out_path[2048];
            snprintf(in_path, sizeof in_path, "%s/%s", dir, e->d_name);
            snprintf(mask_path, sizeof mask_path, "%s/images/body/%s", in_root, e->d_name);
            Image mr, mask;
            read_mha(in_path, &mr);
            struct stat st;
            int has_mask = stat(mask_path, &st) == 0;
            if (has_mask) {
                read_mha(mask_path, &mask);
                if (mask.n != mr.n) die("mask size differs from the image", mask_path);
            }
            float *out = malloc(mr.n * sizeof(float));
            if (!out) die("out of memory", NULL);
            synthesize(&mr, has_mask ? &mask : NULL, out, nan_mode);
            trivial(mode, &mr, out);
            size_t len = strlen(e->d_name);
            int odd = len > 4 && (e->d_name[len - 5] - '0') % 2 == 1;
            int skip = !strcmp(mode, "skip-some") && odd;
            if (strcmp(mode, "no-output") && !skip) {
                mkdirs(out_dir);
                snprintf(out_path, sizeof out_path, "%s/%s", out_dir, e->d_name);
                write_mha(out_path, &mr, out, wrong);
            }
            fprintf(stdout, "synth: %s %ldx%ldx%ld -> done\n", e->d_name, mr.dims[0],
                    mr.dims[1], mr.dims[2]);
            free(out); free(mr.data);
            if (has_mask) free(mask.data);
            count++;
        }
        closedir(d);
    }
    if (!count) { fprintf(stderr, "error: no .mha input under %s/images/{mri,cbct}\n", in_root); return 1; }
    return 0;
}
