/*
 * bench_producer.h: what `evring-bench producer` (bench_producer.c: the
 * evring cases, running them, the results) shares with its peers
 * (bench_producer_peers.c: the same event through a no-op call, a ring
 * behind a mutex, fprintf and LTTng-UST). Private to those two files.
 */
#ifndef EVRING_BENCH_PRODUCER_H
#define EVRING_BENCH_PRODUCER_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include <evring/evring.h>

#include "bench.h"
#include "bench_lttng.h"

#define PROD_THREADS_MAX 2u
#define PROD_MRING_BYTES (64u << 20)

enum prod_kind { K_CLOCK, K_DISABLED, K_EVENT0, K_EVENT3, K_SPAN, K_NOOP, K_MUTEX, K_FPRINTF, K_LTTNG4M, K_LTTNG };

/* The in-process ring behind a mutex: the baseline a lock-free ring has to beat. */
struct mring {
	pthread_mutex_t lock;
	uint8_t *buf;
	uint64_t mask;	  /* bytes - 1 */
	uint64_t tail;	  /* next position, absolute; under the lock */
	uint64_t head;	  /* the consumer's position; moved between runs */
	uint64_t records; /* committed; under the lock */
	uint64_t lost;	  /* dropped for want of room; under the lock */
	uint32_t clock_kind;
};

struct prod_bench {
	struct evr_segment *seg;
	struct evr_reader reader;
	uint8_t *buf;	      /* the reader's copy of a body */
	uint64_t calls;	      /* per thread in the run being made */
	struct mring mr;
	FILE *file;	      /* the fprintf peer's */
	struct bench_lttng lt;
	enum prod_kind lt_kind; /* the LTTng-UST case the running session serves */
	volatile uint64_t sink[PROD_THREADS_MAX];
};

/*
 * The peers' workers (bench_thread_fn): each times b->calls calls of the
 * three-field event on its thread, after bench_thread_ready.
 */
double prod_noop_thread(struct bench_thread *t);
double prod_mutex_thread(struct bench_thread *t);
double prod_fprintf_thread(struct bench_thread *t);
double prod_lttng_thread(struct bench_thread *t);

/* The mutex ring's PROD_MRING_BYTES, every page faulted in; 0 or -ENOMEM. */
int prod_mring_init(struct mring *r, uint32_t clock_kind);

/* The consumer's part, between runs: takes everything. Returns the records taken; *lost the drops. */
uint64_t prod_mring_drain(struct mring *r, uint64_t *lost);

/* A file under $TMPDIR (or /tmp), unlinked at once: it holds nothing after the bench. NULL on failure. */
FILE *prod_file_open(void);

/* Between runs: the lines written go (the file would grow with each run); 0 or -EIO. */
int prod_file_reset(FILE *f);

#endif /* EVRING_BENCH_PRODUCER_H */
