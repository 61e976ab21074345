/* producer.h: what the producer's files share; not installed. */
#ifndef EVRING_PRODUCER_H
#define EVRING_PRODUCER_H

#include <pthread.h>

#include <evring/evring.h>

struct evr_proc {
	pthread_mutex_t lock; /* open and close only; never taken on the write path */
	int state;	      /* INIT, OPEN, OFF (process.c) */
	struct evr_segment seg;
	uint32_t pid;
	uint64_t thread_serial; /* threads opened so far: the high bits of their span ids */
	uint32_t span_base;	/* added to the serial: span ids differ between segments (and across fork) */
	struct evr_site *sites; /* registered sites (lock-free push) */
	char err[EVR_ERR_MAX];
};

extern struct evr_proc evr__proc;

/* Opens the segment from the environment if nothing has yet. True when one is open. */
bool evr__proc_ensure_open(void);

/* Metadata entries (meta.c). Each returns 0 or -ENOSPC / -EINVAL. */
int evr__meta_site(const struct evr_site_def *def, uint64_t *id);
int evr__meta_process(void); /* the segment as created, read back from it */
int evr__meta_thread(const struct evr_writer *w);
int evr__meta_dispatcher(const char *path, bool propagate);
void evr__meta_params(void); /* writes the run parameters given so far into the segment just opened */

/*
 * The stdio tee (stdio.c). start: with the lock held, the segment open (its
 * thread, started here, takes the lock at its first record, after);
 * returns 0 or -errno (fds left as they were). stop: without the lock (its
 * thread takes it to leave its lane); at_exit flushes stdout and stderr
 * first. forked: the child side of fork, which has no tee thread.
 */
int evr__stdio_start(void);
void evr__stdio_stop(bool at_exit);
void evr__stdio_forked(void);

#endif /* EVRING_PRODUCER_H */
