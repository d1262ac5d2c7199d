/* A stand-in for libnccl.so.2 used by Tandem's tests; see README.md. */
#include <stdlib.h>
#include <string.h>

typedef struct { char internal[128]; } id_t128;
typedef struct {
  size_t size;
  unsigned int magic, version;
  int blocking, cga, minCTAs, maxCTAs;
  const char *netName;
} config_t;

struct comm {
  int nranks, rank, initPolls, aborted;
};

/* Defined in cuda.c: the stream state cuStreamQuery reports. */
extern int fake_pending;

/* Failure injection, set by the tests through fake_set. */
enum { HANG, ASYNC_ERROR, INIT_POLLS, FAIL, VERSION, NKNOBS };
static int knobs[NKNOBS] = {[VERSION] = 22105};

void fake_set(int knob, int value) {
  if (knob >= 0 && knob < NKNOBS) knobs[knob] = value;
}

int ncclGetVersion(int *v) { *v = knobs[VERSION]; return 0; }

int ncclGetUniqueId(id_t128 *id) {
  for (int i = 0; i < 128; i++) id->internal[i] = (char)((i * 7 + 3) & 0xff);
  return 0;
}

static int idOK(id_t128 id) {
  for (int i = 0; i < 128; i++)
    if ((unsigned char)id.internal[i] != (unsigned char)((i * 7 + 3) & 0xff)) return 0;
  return 1;
}

static int newComm(struct comm **out, int nranks, id_t128 id, int rank, int polls) {
  if (!idOK(id) || nranks < 1 || rank < 0 || rank >= nranks) return 4;
  struct comm *c = calloc(1, sizeof *c);
  c->nranks = nranks;
  c->rank = rank;
  c->initPolls = polls;
  *out = c;
  return 0;
}

int ncclCommInitRank(struct comm **out, int nranks, id_t128 id, int rank) {
  return newComm(out, nranks, id, rank, 0);
}

/* Built without NO_CONFIG, the fake is a 2.14+ library; with it, an older
 * one that has only the blocking init and no ncclGetLastError. */
#ifndef NO_CONFIG
int ncclCommInitRankConfig(struct comm **out, int nranks, id_t128 id, int rank, config_t *cfg) {
  if (cfg == NULL || cfg->magic != 0xcafebeef || cfg->size != sizeof *cfg || cfg->version < 21400) return 4;
  int polls = cfg->blocking == 0 ? knobs[INIT_POLLS] : 0;
  int r = newComm(out, nranks, id, rank, polls);
  if (r == 0 && polls > 0) return 7;
  return r;
}
#endif

int ncclCommGetAsyncError(struct comm *c, int *res) {
  if (c->initPolls > 0) {
    c->initPolls--;
    *res = 7;
    return 0;
  }
  *res = fake_pending ? knobs[ASYNC_ERROR] : 0;
  return 0;
}

/* One rank "completes" at once; more ranks, or FAKE_NCCL_HANG, leave the
 * stream busy forever, as a group with a missing peer would. */
static int launch(struct comm *c) {
  if (c->aborted) return 5;
  if (c->nranks > 1 || knobs[HANG]) fake_pending = 1;
  return 0;
}

static size_t typeSize(int dt) {
  switch (dt) {
  case 7: return 4;
  case 9: return 2;
  }
  return 0;
}

int ncclAllReduce(const void *s, void *r, size_t n, int dt, int op, struct comm *c, void *stream) {
  if (knobs[FAIL]) return knobs[FAIL];
  if (typeSize(dt) == 0 || op != 0) return 4;
  if (s != r) memmove(r, s, n * typeSize(dt));
  return launch(c);
}

int ncclAllGather(const void *s, void *r, size_t n, int dt, struct comm *c, void *stream) {
  if (typeSize(dt) == 0) return 4;
  memmove((char *)r + (size_t)c->rank * n * typeSize(dt), s, n * typeSize(dt));
  return launch(c);
}

int ncclBroadcast(const void *s, void *r, size_t n, int dt, int root, struct comm *c, void *stream) {
  if (typeSize(dt) == 0 || root < 0 || root >= c->nranks) return 4;
  if (s != r) memmove(r, s, n * typeSize(dt));
  return launch(c);
}

int ncclSend(const void *b, size_t n, int dt, int peer, struct comm *c, void *stream) { return launch(c); }
int ncclRecv(void *b, size_t n, int dt, int peer, struct comm *c, void *stream) { return launch(c); }
int ncclGroupStart(void) { return 0; }
int ncclGroupEnd(void) { return 0; }

int ncclCommAbort(struct comm *c) {
  c->aborted = 1;
  fake_pending = 0;
  return 0;
}

int ncclCommDestroy(struct comm *c) {
  free(c);
  return 0;
}

const char *ncclGetErrorString(int r) {
  switch (r) {
  case 0: return "fake: no error";
  case 4: return "fake: invalid argument";
  case 5: return "fake: invalid usage";
  case 6: return "fake: remote process exited or there was a network error";
  case 7: return "fake: in progress";
  }
  return "fake: unknown result code";
}

#ifndef NO_CONFIG
const char *ncclGetLastError(struct comm *c) { return "fake last error"; }
#endif
