/*
 * slots.h: the ring's private interface between the writer and the consumer
 * slots (slots.c). Labels (W1, E1, K1, ...) refer to the diagram atop
 * evring/ring.h.
 */
#ifndef EVRING_RING_SLOTS_H
#define EVRING_RING_SLOTS_H

#include <evring/ring.h>

/*
 * A consumer's head as a writer may use it. The head is the consumer's
 * to write and may hold anything. A head a consumer could have published lies
 * at most a lane behind pos (where the writer writes next) and not past it:
 * every record before it was written. Anything else is taken as "nothing read
 * since the lane was last full", so the record does not fit and is dropped
 * and counted, never written over what may be unread, until the consumer
 * publishes a head that makes sense. Before the first lap ends nothing can be
 * overwritten, so there it is 0.
 */
static inline uint64_t evr__trusted_head(uint64_t head, uint64_t pos, uint64_t size)
{
	if (pos - head <= size)
		return head;
	return pos >= size ? pos - size : 0;
}

/*
 * The head that bounds a writer of lane `lane` about to write [pos, end):
 * the lowest trusted head among the slots that hold the lane back (W1).
 * A claimed slot whose heartbeat is older than the segment's bound and whose
 * head is in the way is pushed to pos first, its unread records counted
 * (E1-E3). With no slot claimed, slot 0's heads bound it (a reader that
 * claims nothing, and what the last consumer left unread). Slow path only:
 * no lock, no allocation, no system call. The segment clock is read only
 * when a head holds the lane back (is its slot stale?), into *now, which
 * the caller passes in as 0 or as a reading it took already, and may reuse
 * (the drop it goes on to count needs one).
 */
uint64_t evr__slots_head(struct evr_segment *seg, uint32_t lane, uint64_t pos, uint64_t end, uint64_t *now);

/* Stores slot k's heartbeat (K2). */
void evr__slot_heartbeat(struct evr_segment *seg, uint32_t k);

#endif
