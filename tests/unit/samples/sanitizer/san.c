/* Tiny programs that trigger one sanitizer report each (golden samples). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>

struct obj { int mode; char name[16]; };

__attribute__((noinline)) static struct obj *obj_new(void) { return calloc(1, sizeof(struct obj)); }
__attribute__((noinline)) static void obj_unref(struct obj *o) { free(o); }
__attribute__((noinline)) static int obj_mode(struct obj *o) { return o->mode; }
__attribute__((noinline)) static void fill_info(struct obj *o, int *out) { *out = obj_mode(o); }

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "uaf";
    int r = 0;
    if (!strcmp(what, "uaf")) {
        struct obj *o = obj_new(); obj_unref(o); fill_info(o, &r);
    } else if (!strcmp(what, "double-free")) {
        struct obj *o = obj_new(); obj_unref(o); obj_unref(o);
    } else if (!strcmp(what, "overflow")) {
        char *p = malloc(8); p[argc + 7] = 1; r = p[0]; free(p);
    } else if (!strcmp(what, "segv")) {
        struct obj *o = (struct obj *)(long)(argc * 16); fill_info(o, &r);
    } else if (!strcmp(what, "ubsan-shift")) {
        int s = argc + 40; r = 1 << s;
    } else if (!strcmp(what, "ubsan-overflow")) {
        int x = INT_MAX - 1 + argc; r = x + argc;
    } else if (!strcmp(what, "ubsan-null")) {
        struct obj *o = argc > 5 ? obj_new() : NULL; r = o->mode;
    }
    printf("%d\n", r);
    return 0;
}
