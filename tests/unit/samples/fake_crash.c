#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
typedef enum { MIG_MODE_NORMAL, MIG_MODE_CPR_REBOOT, MIG_MODE__MAX } MigMode;
struct MigrationState { MigMode mode; char *name; };
struct MigrationState *current_migration;
int mode_arg;
__attribute__((noinline)) MigMode migrate_mode(void) {
    MigMode mode = current_migration->mode;
    assert(mode >= 0 && mode < MIG_MODE__MAX);
    return mode;
}
__attribute__((noinline)) void qmp_query_migrate(void) {
    if (mode_arg == 2) { printf("%d\n", (int)strlen(current_migration->name)); }
    printf("%d\n", migrate_mode());
}
__attribute__((noinline)) static void monitor_qmp_dispatch(void) { qmp_query_migrate(); }
__attribute__((noinline)) void monitor_cleanup(void) { monitor_qmp_dispatch(); }
void *iothread_run(void *a) { monitor_cleanup(); return NULL; }
void *worker(void *a) { for (;;) pause(); }
int main(int argc, char **argv) {
    pthread_t t, w;
    mode_arg = atoi(argv[1]);
    current_migration = calloc(1, sizeof(*current_migration));
    current_migration->mode = 42;
    current_migration->name = (char*)8;
    pthread_create(&w, NULL, worker, NULL);
    sleep(0);
    pthread_create(&t, NULL, iothread_run, NULL);
    for (;;) pause();
}
