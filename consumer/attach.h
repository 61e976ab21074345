/*
 * attach.h: the first stage. Finds a process's segments in /dev/shm, opens
 * one as hostile input into a struct evr_src (source.h) and claims its
 * consumer slot; closes it again. Gives the drain loop its sources.
 */
#ifndef EVR_CONSUMER_ATTACH_H
#define EVR_CONSUMER_ATTACH_H

#include <stddef.h>
#include <stdint.h>

#include "source.h"

/* Opens, validates and claims one segment; fills *s. Returns 0 or -errno with err set. */
int evr__src_open(struct evr_src *s, const char *shm_name, uint32_t index, unsigned flags, char *err,
		  size_t errlen);
void evr__src_close(struct evr_src *s);

/* Calls fn for each /dev/shm/evring.<pid>.<name> matching pid (0: any) and name (NULL: any). Returns matches or -errno. */
int evr__shm_each(uint32_t pid, const char *name, int (*fn)(void *arg, const char *shm, uint32_t pid), void *arg);
/* The error for a pid with no segment: -ESRCH (no such process) or -ENOENT, with err set. */
int evr__no_segment(uint32_t pid, char *err, size_t errlen);

#endif /* EVR_CONSUMER_ATTACH_H */
