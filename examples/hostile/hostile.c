/* Hostile algorithm containers for SynthArena's reliability tests (issue #7).
 *
 * One static binary, many behaviours: HOSTILE_MODE (baked into each image by build.sh) picks
 * the attack. Probes print one line per attempt, "BREACH <what>" when an attempt got through
 * and "contained <what>: <errno>" otherwise, then exit 42 so the case fails. The tests read
 * those lines from the captured logs as evidence. Network probes only target addresses on
 * this machine (HOSTILE_TARGETS, set at build time: loopback and the Docker bridge gateway).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static int breaches = 0;

static void report(int ok, const char *what) {
    if (ok) {
        breaches++;
        printf("BREACH %s\n", what);
    } else {
        printf("contained %s: %s\n", what, strerror(errno));
    }
    fflush(stdout);
}

static int done(void) {
    printf("hostile: %d breach(es)\n", breaches);
    fflush(stdout);
    return 42;
}

/* The first input case name (e.g. 1BA000) from /input/images/mri or /cbct. */
static int first_case(char *name, size_t n) {
    const char *dirs[] = {"/input/images/mri", "/input/images/cbct"};
    for (int i = 0; i < 2; i++) {
        DIR *d = opendir(dirs[i]);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            char *dot = strstr(e->d_name, ".mha");
            if (dot && (size_t)(dot - e->d_name) < n) {
                memcpy(name, e->d_name, dot - e->d_name);
                name[dot - e->d_name] = 0;
                closedir(d);
                return 1;
            }
        }
        closedir(d);
    }
    strcpy(name, "1BA000");
    return 0;
}

static void mkout(void) {
    mkdir("/output/images", 0755);
    mkdir("/output/images/synthetic-ct", 0755);
}

__attribute__((noreturn)) static int fork_bomb(void) {
    long ok = 0, failed = 0;
    time_t last = 0;
    for (;;) {
        pid_t p = fork();
        if (p == 0) { for (;;) pause(); }
        if (p > 0) ok++; else failed++;
        if (time(NULL) != last) {
            last = time(NULL);
            printf("fork bomb: %ld forks succeeded, %ld refused (%s)\n", ok, failed,
                   failed ? strerror(errno) : "-");
            fflush(stdout);
        }
    }
}

__attribute__((noreturn)) static int memory_bomb(void) {
    size_t total = 0;
    for (;;) {
        size_t n = 16 << 20;
        char *p = malloc(n);
        if (!p) { printf("malloc refused at %zu MB\n", total >> 20); fflush(stdout); pause(); }
        memset(p, 0xAB, n);
        total += n;
        printf("allocated %zu MB\n", total >> 20);
        fflush(stdout);
    }
}

__attribute__((noreturn)) static int cpu_spin(void) {
    volatile unsigned long x = 0;
    for (;;) x++;
}

__attribute__((noreturn)) static int sleep_forever(void) {
    signal(SIGTERM, SIG_IGN);  /* ignore polite stops too */
    signal(SIGINT, SIG_IGN);
    for (;;) pause();
}

static void tcp_probe(const char *host, int port) {
    char what[128];
    snprintf(what, sizeof what, "tcp connect %s:%d", host, port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) { report(0, what); return; }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    report(connect(s, (struct sockaddr *)&a, sizeof a) == 0, what);
    close(s);
}

static void udp_dns_probe(const char *host) {
    char what[128];
    snprintf(what, sizeof what, "dns query to %s:53", host);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { report(0, what); return; }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, host, &a.sin_addr);
    /* a minimal query for "localhost" A */
    unsigned char q[] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 'l', 'o', 'c', 'a',
                         'l', 'h', 'o', 's', 't', 0, 0, 1, 0, 1};
    /* A send on the container's own loopback always "works": only an answer is a breach. */
    struct timeval tv = {.tv_sec = 1};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char ans[512];
    int ok = sendto(s, q, sizeof q, 0, (struct sockaddr *)&a, sizeof a) == (ssize_t)sizeof q &&
             recv(s, ans, sizeof ans, 0) > 0;
    report(ok, what);
    close(s);
}

static int network(void) {
    /* Interfaces other than lo would show up here. */
    FILE *f = fopen("/proc/net/dev", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (!colon) continue;
            *colon = 0;
            char *name = line;
            while (*name == ' ') name++;
            if (strcmp(name, "lo") != 0) { char w[300]; snprintf(w, sizeof w, "interface %s", name); report(1, w); }
        }
        fclose(f);
    }
    FILE *r = fopen("/etc/resolv.conf", "r");
    if (r) {
        char line[256];
        while (fgets(line, sizeof line, r)) {
            char ip[64];
            if (sscanf(line, "nameserver %63s", ip) == 1) udp_dns_probe(ip);
        }
        fclose(r);
    }
    const char *targets = getenv("HOSTILE_TARGETS");
    char buf[512];
    snprintf(buf, sizeof buf, "%s", targets ? targets : "127.0.0.1,172.17.0.1");
    int ports[] = {6379, 5432, 8000, 2375, 22, 80};
    for (char *host = strtok(buf, ","); host; host = strtok(NULL, ",")) {
        udp_dns_probe(host);
        for (size_t i = 0; i < sizeof ports / sizeof *ports; i++) tcp_probe(host, ports[i]);
    }
    return done();
}

static int write_input(void) {
    char name[64], path[256];
    first_case(name, sizeof name);
    report(open("/input/pwned", O_CREAT | O_WRONLY, 0644) >= 0, "create /input/pwned");
    snprintf(path, sizeof path, "/input/images/mri/%s.mha", name);
    report(open(path, O_WRONLY | O_TRUNC) >= 0, "truncate the input image");
    report(unlink(path) == 0, "unlink the input image");
    report(chmod(path, 0777) == 0, "chmod the input image");
    report(rename("/input/region.json", "/input/r.json") == 0, "rename /input/region.json");
    report(open("/hostile-root-write", O_CREAT | O_WRONLY, 0644) >= 0, "write the root fs");
    return done();
}

__attribute__((noreturn)) static int fill_disk(void) {
    char name[64], path[256];
    first_case(name, sizeof name);
    mkout();
    signal(SIGXFSZ, SIG_IGN);  /* see the error instead of dying on the file size limit */
    static char block[1 << 20];
    memset(block, 0x5A, sizeof block);
    long mb = 0;
    for (int i = 0;; i++) {
        snprintf(path, sizeof path, "/output/images/synthetic-ct/%s%s", name, i ? "" : ".mha");
        if (i) snprintf(path, sizeof path, "/output/fill-%d.bin", i);
        int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) { printf("open %s: %s\n", path, strerror(errno)); fflush(stdout); pause(); }
        for (;;) {
            ssize_t w = write(fd, block, sizeof block);
            if (w <= 0) {
                printf("write stopped after %ld MB in total: %s\n", mb, strerror(errno));
                fflush(stdout);
                break;
            }
            mb++;
        }
        close(fd);
    }
}

__attribute__((noreturn)) static int many_files(void) {
    mkout();
    char path[256];
    long n = 0;
    for (;; n++) {
        snprintf(path, sizeof path, "/output/images/synthetic-ct/f%07ld.mha", n);
        int fd = open(path, O_CREAT | O_WRONLY, 0644);
        if (fd < 0) { printf("created %ld files, then: %s\n", n, strerror(errno)); fflush(stdout); pause(); }
        close(fd);
        if (n % 10000 == 0) { printf("%ld files\n", n); fflush(stdout); }
    }
}

static int log_flood(void) {
    static char line[4096];
    memset(line, 'L', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (;;) {
        if (write(1, line, sizeof line) < 0) break;
        if (write(2, line, sizeof line) < 0) break;
    }
    return 1;
}

static int symlink_file(void) {
    char name[64], path[256];
    first_case(name, sizeof name);
    mkout();
    /* The expected output file is a link to a host file. */
    snprintf(path, sizeof path, "/output/images/synthetic-ct/%s.mha", name);
    printf("symlink %s -> /etc/passwd: %s\n", path,
           symlink("/etc/passwd", path) ? strerror(errno) : "made");
    fflush(stdout);
    return 0;  /* exits 0: the platform must reject the output, not just an exit code */
}

/* The output DIRECTORY is a relative link that leaves /output: on the host it resolves to the
 * run's input dir, whose MR file has exactly the right name and geometry. */
static int symlink_dir(void) {
    mkdir("/output/images", 0755);
    printf("symlink /output/images/synthetic-ct -> ../../input/images/mri: %s\n",
           symlink("../../input/images/mri", "/output/images/synthetic-ct") ? strerror(errno)
                                                                           : "made");
    fflush(stdout);
    return 0;
}

/* A MetaImage header whose voxels live in ANOTHER file (a path relative to /output on the
 * host): a reader that follows ElementDataFile would read outside the container's output. */
static int mha_external(void) {
    char name[64], path[256];
    first_case(name, sizeof name);
    mkout();
    snprintf(path, sizeof path, "/output/images/synthetic-ct/%s.mha", name);
    FILE *f = fopen(path, "w");
    if (!f) { report(0, "write output header"); return done(); }
    /* The header's geometry is copied from the input so that only the data file differs. */
    char ipath[256];
    snprintf(ipath, sizeof ipath, "/input/images/mri/%s.mha", name);
    FILE *in = fopen(ipath, "r");
    char line[512];
    while (in && fgets(line, sizeof line, in)) {
        if (strncmp(line, "ElementDataFile", 15) == 0) break;
        if (strncmp(line, "CompressedData", 14) == 0) continue;
        fputs(line, f);
    }
    if (in) fclose(in);
    const char *target = getenv("HOSTILE_DATAFILE");
    fprintf(f, "ElementDataFile = %s\n", target ? target : "/dev/zero");
    fclose(f);
    printf("wrote a header pointing at %s\n", target ? target : "?");
    fflush(stdout);
    return 0;
}

static int setuid_probe(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        char w[96];
        snprintf(w, sizeof w, "setuid exec gave euid %d", (int)geteuid());
        errno = EPERM;
        report(geteuid() == 0, w);
        return 0;
    }
    printf("uid=%d euid=%d gid=%d\n", (int)getuid(), (int)geteuid(), (int)getgid());
    report(setuid(0) == 0, "setuid(0)");
    report(setgid(0) == 0, "setgid(0)");
    pid_t p = fork();
    if (p == 0) {
        char *args[] = {"/suid", "child", NULL};
        execve("/suid", args, environ);
        report(0, "exec the setuid binary");
        _exit(0);
    }
    waitpid(p, NULL, 0);
    report(unshare(CLONE_NEWUSER) == 0, "unshare(CLONE_NEWUSER)");
    report(unshare(CLONE_NEWNS) == 0, "unshare(CLONE_NEWNS)");
    report(mount("none", "/tmp", "tmpfs", 0, NULL) == 0, "mount tmpfs");
    report(chroot("/tmp") == 0, "chroot");
    report(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) >= 0, "raw socket");
    report(mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)) == 0, "mknod a block device");
    report(prctl(PR_SET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0 && prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0,
           "clear no_new_privs");
    report(open("/proc/sysrq-trigger", O_WRONLY) >= 0, "open /proc/sysrq-trigger");
    report(open("/sys/kernel/uevent_helper", O_WRONLY) >= 0, "open /sys/kernel/uevent_helper");
    return done();
}

static const char *SUSPICIOUS[] = {"SYNTHARENA", "PASSWORD", "SECRET", "TOKEN", "DATABASE",
                                   "REDIS", "postgres", "AWS_", "S3_", "CELERY", NULL};

/* Report the file (and what in it) when it holds anything that looks like a secret. */
static void scan_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    for (ssize_t i = 0; i < n; i++) if (buf[i] == 0) buf[i] = '\n';
    buf[n] = 0;
    for (const char **k = SUSPICIOUS; *k; k++) {
        char *hit = strstr(buf, *k);
        if (hit) {
            char what[200];
            char *end = strchr(hit, '\n');
            int len = end ? (int)(end - hit) : (int)strlen(hit);
            snprintf(what, sizeof what, "secret-looking text in %s: %.*s", path, len > 120 ? 120 : len, hit);
            report(1, what);
        }
    }
}

static int secrets(void) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int procs = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        procs++;
        char p[300];
        snprintf(p, sizeof p, "/proc/%s/environ", e->d_name);
        scan_file(p);
        snprintf(p, sizeof p, "/proc/%s/cmdline", e->d_name);
        scan_file(p);
    }
    if (d) closedir(d);
    const char *files[] = {"/run/secrets", "/var/run/secrets", "/etc/hostname", "/etc/hosts",
                           "/etc/resolv.conf", "/proc/self/mountinfo", "/proc/1/cgroup", NULL};
    for (const char **f = files; *f; f++) scan_file(*f);
    printf("scanned %d processes (all of them in this container)\n", procs);
    /* Last, so the capped log tail always holds it: the whole environment. */
    for (char **v = environ; *v; v++) printf("ENV %s\n", *v);
    fflush(stdout);
    return done();
}

static int docker_socket(void) {
    const char *paths[] = {"/var/run/docker.sock", "/run/docker.sock", "/docker.sock",
                           "/run/containerd/containerd.sock"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", paths[i]);
        char w[128];
        snprintf(w, sizeof w, "connect %s", paths[i]);
        report(s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0, w);
        if (s >= 0) close(s);
    }
    tcp_probe("172.17.0.1", 2375);
    tcp_probe("172.17.0.1", 2376);
    return done();
}

int main(int argc, char **argv) {
    const char *mode = getenv("HOSTILE_MODE");
    if (!mode) mode = "sleep";
    if (!strcmp(mode, "fork-bomb")) return fork_bomb();
    if (!strcmp(mode, "memory-bomb")) return memory_bomb();
    if (!strcmp(mode, "cpu-spin")) return cpu_spin();
    if (!strcmp(mode, "sleep-forever")) return sleep_forever();
    if (!strcmp(mode, "network")) return network();
    if (!strcmp(mode, "write-input")) return write_input();
    if (!strcmp(mode, "fill-disk")) return fill_disk();
    if (!strcmp(mode, "many-files")) return many_files();
    if (!strcmp(mode, "log-flood")) return log_flood();
    if (!strcmp(mode, "symlink-file")) return symlink_file();
    if (!strcmp(mode, "symlink-dir")) return symlink_dir();
    if (!strcmp(mode, "mha-external")) return mha_external();
    if (!strcmp(mode, "setuid")) return setuid_probe(argc, argv);
    if (!strcmp(mode, "secrets")) return secrets();
    if (!strcmp(mode, "docker-socket")) return docker_socket();
    fprintf(stderr, "unknown HOSTILE_MODE %s\n", mode);
    return 2;
}
