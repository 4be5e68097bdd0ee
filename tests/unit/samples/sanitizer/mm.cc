#include <cstdlib>
__attribute__((noinline)) static void drop(int *p) { delete p; }
int main(int c, char **) { int *p = (int *)malloc(4 * c); drop(p); return 0; }
