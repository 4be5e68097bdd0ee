/*
 * In-guest memory workload for migration tests.
 *
 * usage: workload MEM_MIB RATE_MIB_S HB_MS
 *
 * Fills MEM_MIB of anonymous memory with self-verifying 4 KiB pages, prints
 * "WORKLOAD READY pages=<n>", then rewrites the pages in ascending order,
 * one generation higher on each pass, at RATE_MIB_S (0 = as fast as it can).
 * Every HB_MS it prints "HB <seq> <monotonic_ms>".  Commands on stdin, one a
 * line (LF or CR ends a line):
 *   verify  check every page, print "VERIFY pages=<n> bad=<count>"
 *   stop    stop dirtying, print "STOPPED" (heartbeats go on)
 *   go      resume dirtying, print "GOING"
 *   stats   print "STATS gen=<g> cursor=<c> written=<pages written since READY> dirtying=<0|1>"
 *   corrupt <page> <offset>
 *           flip one byte (for testing the verifier), print "CORRUPTED page=<p> offset=<o>"
 *
 * Page layout: 32-byte header {u32 magic, u32 index, u64 generation,
 * u64 header check, u64 body check} then a body of 508 u64 words drawn from
 * a xorshift64* stream seeded by (index, generation).  verify regenerates
 * the body from the header and compares every word, checks the index
 * against the page's position, both checks, and that the generation is the
 * one the writer left there (pages before the write cursor carry the current
 * generation, the others the previous one), so a page that migration lost
 * (an older but self-consistent copy) is caught as well as any single
 * corrupted byte.
 *
 * Output lines are written with one write(2) each.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096
#define MAGIC 0x504c574du /* "MWLP" */
#define BODY_WORDS ((PAGE_SIZE - 32) / 8)
#define CHUNK_PAGES 32      /* pages written between clock/stdin checks */
#define MAX_BAD_REPORTS 8

struct page_hdr {
    uint32_t magic;
    uint32_t index;
    uint64_t gen;
    uint64_t hcheck;
    uint64_t bcheck;
};

struct page {
    struct page_hdr h;
    uint64_t body[BODY_WORDS];
};

_Static_assert(sizeof(struct page) == PAGE_SIZE, "page layout");

static struct page *pages;
static uint64_t npages;
static uint64_t gen_cur;   /* generation being written */
static uint64_t cursor;    /* pages [0, cursor) carry gen_cur, the rest gen_cur - 1 */
static int dirtying = 1;
static int stdin_dead;
static uint64_t written;
static uint64_t hb_seq;
static uint64_t hb_ms = 100;
static uint64_t next_hb;

static void out(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(buf) - 2)
        n = sizeof(buf) - 2;
    buf[n++] = '\n';
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return;
        }
        p += w;
        n -= w;
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mix64(uint64_t z)
{
    /* splitmix64 finaliser */
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t page_seed(uint64_t index, uint64_t gen)
{
    uint64_t s = mix64(index * 0x100000001b3ull ^ mix64(gen));
    return s ? s : 1;
}

static uint64_t header_check(uint32_t magic, uint32_t index, uint64_t gen)
{
    return mix64(((uint64_t)magic << 32 | index) ^ mix64(gen ^ 0x6a09e667f3bcc909ull));
}

static void write_page(uint64_t i, uint64_t gen)
{
    struct page *p = &pages[i];
    uint64_t s = page_seed(i, gen), sum = 0;
    for (int w = 0; w < BODY_WORDS; w++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        uint64_t v = s * 0x2545f4914f6cdd1dull;
        p->body[w] = v;
        sum = (sum ^ v) * 0x100000001b3ull;
    }
    p->h.magic = MAGIC;
    p->h.index = (uint32_t)i;
    p->h.gen = gen;
    p->h.hcheck = header_check(MAGIC, (uint32_t)i, gen);
    p->h.bcheck = sum;
}

/* 0 if good, otherwise a short reason. */
static const char *check_page(uint64_t i, uint64_t want_gen)
{
    const struct page *p = &pages[i];
    if (p->h.magic != MAGIC)
        return "magic";
    if (p->h.index != (uint32_t)i)
        return "index";
    if (p->h.hcheck != header_check(p->h.magic, p->h.index, p->h.gen))
        return "header-check";
    uint64_t s = page_seed(i, p->h.gen), sum = 0;
    for (int w = 0; w < BODY_WORDS; w++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        uint64_t v = s * 0x2545f4914f6cdd1dull;
        if (p->body[w] != v)
            return "body";
        sum = (sum ^ v) * 0x100000001b3ull;
    }
    if (p->h.bcheck != sum)
        return "body-check";
    if (p->h.gen != want_gen)
        return "stale-generation";
    return 0;
}

static void heartbeat_if_due(void)
{
    uint64_t t = now_ms();
    if (t >= next_hb) {
        out("HB %llu %llu", (unsigned long long)++hb_seq, (unsigned long long)t);
        next_hb += hb_ms;
        if (next_hb <= t)
            next_hb = t + hb_ms;
    }
}

static void verify(void)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < npages; i++) {
        uint64_t want = i < cursor ? gen_cur : gen_cur - 1;
        const char *why = check_page(i, want);
        if (why) {
            if (bad < MAX_BAD_REPORTS)
                out("BAD page=%llu reason=%s gen=%llu want=%llu", (unsigned long long)i, why,
                    (unsigned long long)pages[i].h.gen, (unsigned long long)want);
            bad++;
        }
        if ((i & 255) == 255)
            heartbeat_if_due();
    }
    out("VERIFY pages=%llu bad=%llu", (unsigned long long)npages, (unsigned long long)bad);
}

static char line[128];
static size_t line_len;
static int line_overflow;

static void command(const char *cmd)
{
    if (!strcmp(cmd, "verify")) {
        verify();
    } else if (!strcmp(cmd, "stop")) {
        dirtying = 0;
        out("STOPPED");
    } else if (!strcmp(cmd, "go")) {
        dirtying = 1;
        out("GOING");
    } else if (!strcmp(cmd, "stats")) {
        out("STATS gen=%llu cursor=%llu written=%llu dirtying=%d", (unsigned long long)gen_cur,
            (unsigned long long)cursor, (unsigned long long)written, dirtying);
    } else if (!strncmp(cmd, "corrupt ", 8)) {
        unsigned long long pg, off;
        if (sscanf(cmd + 8, "%llu %llu", &pg, &off) == 2 && pg < npages && off < PAGE_SIZE) {
            ((volatile uint8_t *)&pages[pg])[off] ^= 0x5a;
            out("CORRUPTED page=%llu offset=%llu", pg, off);
        } else {
            out("ERR corrupt needs <page < %llu> <offset < %d>", (unsigned long long)npages, PAGE_SIZE);
        }
    } else if (cmd[0]) {
        out("ERR unknown command '%s'", cmd);
    }
}

/* Wait up to timeout_ms for input on stdin and handle complete lines. */
static void poll_input(int timeout_ms)
{
    if (stdin_dead) {
        if (timeout_ms > 0)
            usleep(timeout_ms * 1000);
        return;
    }
    struct pollfd pfd = { .fd = 0, .events = POLLIN };
    if (poll(&pfd, 1, timeout_ms) <= 0 || !(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
        return;
    char buf[256];
    ssize_t n = read(0, buf, sizeof(buf));
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            stdin_dead = 1; /* EOF or error: keep dirtying, stop reading */
            out("WORKLOAD stdin closed");
        }
        return;
    }
    for (ssize_t k = 0; k < n; k++) {
        char c = buf[k];
        if (c == '\n' || c == '\r') {
            if (!line_overflow) {
                line[line_len] = 0;
                /* trim trailing blanks */
                while (line_len && (line[line_len - 1] == ' ' || line[line_len - 1] == '\t'))
                    line[--line_len] = 0;
                const char *cmd = line;
                while (*cmd == ' ' || *cmd == '\t')
                    cmd++;
                command(cmd);
            }
            line_len = 0;
            line_overflow = 0;
        } else if (line_len < sizeof(line) - 1) {
            line[line_len++] = c;
        } else {
            line_overflow = 1;
        }
    }
}

static void setup_tty(void)
{
    struct termios t;
    if (tcgetattr(0, &t) != 0)
        return;
    /* No echo, no line editing, no signals, no flow control: every byte the
     * harness sends reaches us, and nothing is echoed into the log. */
    t.c_lflag &= ~(ECHO | ECHONL | ECHOE | ECHOK | ICANON | ISIG | IEXTEN);
    t.c_iflag &= ~(IXON | IXOFF | INLCR | IGNCR | ICRNL | ISTRIP | BRKINT);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(0, TCSANOW, &t);
}

static uint64_t parse_arg(const char *s, const char *name, uint64_t dflt)
{
    if (!s || !*s)
        return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) {
        out("WORKLOAD bad %s '%s', using %llu", name, s, (unsigned long long)dflt);
        return dflt;
    }
    return v;
}

static void advance(void)
{
    if (cursor == npages) {
        gen_cur++;
        cursor = 0;
    }
    write_page(cursor, gen_cur);
    cursor++;
    written++;
}

int main(int argc, char **argv)
{
    uint64_t mem_mib = parse_arg(argc > 1 ? argv[1] : 0, "mem", 64);
    uint64_t rate = parse_arg(argc > 2 ? argv[2] : 0, "rate", 0);
    hb_ms = parse_arg(argc > 3 ? argv[3] : 0, "hb_ms", 100);
    if (mem_mib == 0)
        mem_mib = 1;
    if (hb_ms == 0)
        hb_ms = 100;

    setup_tty();
    out("WORKLOAD START mem=%llu rate=%llu hb_ms=%llu", (unsigned long long)mem_mib,
        (unsigned long long)rate, (unsigned long long)hb_ms);

    npages = mem_mib * (1024 * 1024 / PAGE_SIZE);
    size_t len = npages * PAGE_SIZE;
    pages = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (pages == MAP_FAILED) {
        out("WORKLOAD FAILED mmap %llu MiB: %s", (unsigned long long)mem_mib, strerror(errno));
        for (;;)
            pause();
    }
    if (mlock(pages, len) != 0)
        out("WORKLOAD mlock failed: %s (continuing)", strerror(errno));

    gen_cur = 0;
    for (cursor = 0; cursor < npages; cursor++)
        write_page(cursor, gen_cur);
    out("WORKLOAD READY pages=%llu", (unsigned long long)npages);

    next_hb = now_ms();
    /* Rate limit: a credit of pages, refilled from the clock, capped at 100 ms worth. */
    double pages_per_ms = (double)rate * (1024.0 * 1024.0 / PAGE_SIZE) / 1000.0;
    double credit = 0;
    uint64_t last = now_ms();

    for (;;) {
        heartbeat_if_due();
        uint64_t t = now_ms();
        if (!dirtying) {
            poll_input((int)(next_hb > t ? next_hb - t : 0));
            last = now_ms();
            credit = 0;
            continue;
        }
        if (rate == 0) {
            for (int k = 0; k < CHUNK_PAGES; k++)
                advance();
            poll_input(0);
            continue;
        }
        credit += (double)(t - last) * pages_per_ms;
        last = t;
        double cap = pages_per_ms * 100 + CHUNK_PAGES;
        if (credit > cap)
            credit = cap;
        if (credit >= 1) {
            int k;
            for (k = 0; k < CHUNK_PAGES && credit >= 1; k++, credit -= 1)
                advance();
            poll_input(0);
        } else {
            uint64_t need = (uint64_t)((1 - credit) / pages_per_ms) + 1;
            uint64_t until_hb = next_hb > t ? next_hb - t : 0;
            poll_input((int)(need < until_hb ? need : until_hb));
        }
    }
}
