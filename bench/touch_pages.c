/* Time to fault in every page of a mapped file, and how much of it the kernel mapped
 * with 2 MiB entries (FilePmdMapped): what a cold thaw process pays to touch its
 * snapshot (README, Architecture / `thaw snapshot build`).
 *
 *   cc -O2 bench/touch_pages.c -o /tmp/touch_pages && /tmp/touch_pages FILE.thaw
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    const char *p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    double t0 = now_ms();
    volatile long sum = 0;
    for (off_t i = 0; i < st.st_size; i += 4096) sum += p[i];
    printf("touched %lld bytes in %.2f ms\n", (long long)st.st_size, now_ms() - t0);
    fflush(stdout);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "grep FilePmdMapped /proc/%d/smaps_rollup", (int)getpid());
    return system(cmd) == 0 ? 0 : 1;
}
