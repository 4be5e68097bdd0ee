#include <stdio.h>
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) static int recurse(volatile int n) { volatile char buf[256]; buf[0] = n; return recurse(n + 1) + buf[0]; }
__attribute__((noinline)) static void *leaky_setup(size_t n) { return malloc(n); }
int main(int argc, char **argv) {
    const char *what = argv[1];
    if (!strcmp(what, "bad-free")) { char *p = malloc(16); free(p + argc); }
    else if (!strcmp(what, "stack-overflow")) { return recurse(argc); }
    else if (!strcmp(what, "too-big")) { volatile size_t n = (size_t)-1 / argc - 5; char *p = malloc(n); printf("%p\n", p); }
    else if (!strcmp(what, "leak")) { void *p = leaky_setup(40 * argc); p = 0; printf("%p\n", p); }
    else if (!strcmp(what, "overlap")) { char b[32] = "abcdefghijklmnopqrstuvwxyz"; memcpy(b + argc, b, 10); printf("%s\n", b); }
    return 0;
}
