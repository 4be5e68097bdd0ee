#include <pthread.h>
#include <stdio.h>
static int counter;
__attribute__((noinline)) static void bump(void) { counter++; }
static void *worker(void *a) { bump(); return a; }
int main(void) { pthread_t t; pthread_create(&t, 0, worker, 0); bump(); pthread_join(t, 0); printf("%d\n", counter); return 0; }
