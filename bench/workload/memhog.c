/*
 * memhog: the benchmark's memory workload. A small static program (the busybox test image has
 * no libc): build with `gcc -static -O2 -o memhog memhog.c`.
 *
 *   memhog MIB          allocate MIB MiB of anonymous memory, fill every 4 KiB page with
 *                       2 KiB of pseudo-random bytes and 2 KiB of a repeating text pattern,
 *                       then loop forever (10 ms naps). Files it keeps in /tmp:
 *     /tmp/ready        written once the memory is filled: the checksum of the whole buffer
 *     /tmp/sum          the checksum, recomputed over the whole buffer on request; a request
 *                       is the file /tmp/sum.req appearing (memhog deletes it) or SIGUSR1.
 *                       Written to /tmp/sum.tmp then renamed, so a reader never sees half.
 *     /tmp/resumed      one line "SECONDS.NANOS" (CLOCK_REALTIME) appended whenever the loop
 *                       sees a gap > 250 ms between two naps: the process was frozen
 *                       (checkpointed) and has just run again (restored). The benchmark reads
 *                       the line that follows a restore's start to time "running again".
 *   memhog --touch MIB  host helper: touch MIB MiB and exit (re-warms freed guest memory).
 *
 * Every state the checksum depends on lives in the buffer, which never changes after the fill,
 * so the checksum before a checkpoint must equal the one after a restore.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define GAP_NS 250000000LL

static volatile sig_atomic_t want_sum;

static void on_usr1(int sig) {
  (void)sig;
  want_sum = 1;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fill(unsigned char *buf, size_t len) {
  static const char pat[] = "stasis-bench: half random, half a repeating pattern. ";
  const size_t plen = sizeof(pat) - 1;
  uint64_t seed = 0x5eed5eed12345678ULL;
  for (size_t off = 0; off < len; off += PAGE) {
    uint64_t *r = (uint64_t *)(buf + off);
    for (size_t i = 0; i < PAGE / 2 / 8; i++) r[i] = splitmix64(&seed);
    unsigned char *p = buf + off + PAGE / 2;
    for (size_t i = 0; i < PAGE / 2; i++) p[i] = (unsigned char)pat[(off / PAGE + i) % plen];
  }
}

/* A 4-lane multiply-xorshift hash over 64-bit words: fast enough for 1 GiB in well under 1 s. */
static uint64_t checksum(const unsigned char *buf, size_t len) {
  const uint64_t *w = (const uint64_t *)buf;
  size_t n = len / 8;
  uint64_t h[4] = {1, 2, 3, 4};
  const uint64_t k = 0x9fb21c651e98df25ULL;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; j++) {
      uint64_t x = (h[j] ^ w[i + j]) * k;
      h[j] = x ^ (x >> 29);
    }
  }
  uint64_t out = len;
  for (int j = 0; j < 4; j++) {
    out = (out ^ h[j]) * k;
    out ^= out >> 32;
  }
  return out;
}

static void write_file(const char *path, const char *text) {
  char tmp[256];
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t unused = write(fd, text, strlen(text));
  (void)unused;
  close(fd);
  rename(tmp, path);
}

static void append_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t unused = write(fd, text, strlen(text));
  (void)unused;
  close(fd);
}

static unsigned char *alloc(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("memhog: mmap");
    exit(1);
  }
  return p;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--touch") == 0) {
    size_t len = (size_t)strtoull(argv[2], NULL, 10) << 20;
    unsigned char *b = alloc(len);
    for (size_t off = 0; off < len; off += PAGE) b[off] = 1;
    return 0;
  }
  if (argc != 2) {
    fprintf(stderr, "usage: memhog MIB | memhog --touch MIB\n");
    return 2;
  }
  size_t len = (size_t)strtoull(argv[1], NULL, 10) << 20;
  if (len == 0) return 2;

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);

  unsigned char *buf = alloc(len);
  fill(buf, len);
  char line[128];
  snprintf(line, sizeof(line), "%016llx\n", (unsigned long long)checksum(buf, len));
  unlink("/tmp/sum");
  unlink("/tmp/resumed");
  write_file("/tmp/ready", line);

  long long last = now_ns();
  for (;;) {
    struct timespec nap = {0, 10 * 1000 * 1000};
    nanosleep(&nap, NULL);
    long long now = now_ns();
    if (now - last > GAP_NS) {
      snprintf(line, sizeof(line), "%lld.%09lld\n", now / 1000000000LL, now % 1000000000LL);
      append_file("/tmp/resumed", line);
    }
    struct stat st;
    if (stat("/tmp/sum.req", &st) == 0) {
      unlink("/tmp/sum.req");
      want_sum = 1;
    }
    if (want_sum) {
      want_sum = 0;
      snprintf(line, sizeof(line), "%016llx\n", (unsigned long long)checksum(buf, len));
      write_file("/tmp/sum", line);
      now = now_ns(); /* the checksum's own time is not a gap */
    }
    last = now;
  }
}
