/*
 * fault.h: segments that shrink under the consumer. A segment is a file any
 * process of its owner may truncate; a read of a page past the new end
 * raises SIGBUS. The consumer watches each mapping it reads: a SIGBUS inside
 * one replaces the pages from the faulting one to the mapping's end with
 * anonymous zero pages (which read as "nothing committed") and marks the
 * mapping faulted, so the instruction resumes and the drain detaches that
 * segment at the end of its round; every other segment goes on. A SIGBUS
 * outside every watched mapping goes to the handler that was there before
 * (the default: the process ends as it would have). Leaf module: used by
 * attach (watch, unwatch) and drain (faulted).
 */
#ifndef EVR_CONSUMER_FAULT_H
#define EVR_CONSUMER_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Watches [base, base + len). Returns a slot (> 0), or -ENOSPC when every slot is taken (not watched). */
int evr__fault_watch(void *base, size_t len);

/* Stops watching slot (before the mapping is unmapped). slot <= 0 (none, or a zeroed source's): nothing. */
void evr__fault_unwatch(int slot);

/* Whether a SIGBUS hit the mapping of slot; *offset: where, from its base. */
bool evr__fault_taken(int slot, uint64_t *offset);

#endif
