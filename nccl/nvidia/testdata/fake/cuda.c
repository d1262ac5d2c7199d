/* A stand-in for libcuda.so.1 used by Tandem's tests; see README.md.
 * Device memory is host memory; there is one device and one context. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int contexts;

/* Set by the fake libnccl, which links against this library (as the real
 * one loads the real driver), while launched work is "on the stream". */
int fake_pending;

int cuInit(unsigned flags) { return 0; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
int cuDeviceGet(int *d, int ordinal) { *d = ordinal; return ordinal == 0 ? 0 : 101; }
int cuDevicePrimaryCtxRetain(void **ctx, int dev) { contexts++; *ctx = (void *)0x1000; return 0; }
int cuDevicePrimaryCtxRelease_v2(int dev) { contexts--; return 0; }
int cuCtxSetCurrent(void *ctx) { return ctx == (void *)0x1000 ? 0 : 201; }
/* fake_notify_pending(fd): the next cuStreamQuery that finds work pending
 * writes one byte to fd, once: a test's event that a caller waits on the
 * stream. */
static int notify_fd = -1;
void fake_notify_pending(int fd) { notify_fd = fd; }

int cuStreamQuery(void *stream) {
  if (fake_pending && notify_fd >= 0) {
    int fd = notify_fd;
    notify_fd = -1;
    if (write(fd, "q", 1) != 1) return 999;
  }
  return fake_pending ? 600 : 0;
}
int cuMemAlloc_v2(void **p, size_t n) { *p = calloc(1, n); return *p ? 0 : 2; }
int cuMemFree_v2(void *p) { free(p); return 0; }
int cuMemcpyHtoD_v2(void *d, const void *s, size_t n) { memcpy(d, s, n); return 0; }
int cuMemcpyDtoH_v2(void *d, const void *s, size_t n) { memcpy(d, s, n); return 0; }
int fake_contexts(void) { return contexts; }

int cuGetErrorString(int r, const char **s) {
  switch (r) {
  case 0: *s = "no error"; return 0;
  case 101: *s = "invalid device ordinal"; return 0;
  case 600: *s = "device not ready"; return 0;
  }
  *s = NULL;
  return 1;
}
