/*
 * fault.c: the SIGBUS watch over segment mappings (fault.h says why).
 *
 * The handler runs on whichever thread touched the page: it reads the slot
 * table with atomic loads only and calls mmap, a system call, so it is
 * async-signal-safe. A slot is published by its base (store-release after
 * len) and withdrawn by storing base 0 before the mapping goes away, so the
 * handler never maps over memory that is no longer the segment's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fault.h"

#define FAULT_SLOTS 4096 /* segments one consumer process may map at once */

static struct {
	uintptr_t base; /* 0: free */
	size_t len;
	uint64_t offset; /* of the first fault, + 1; 0: none */
} slots[FAULT_SLOTS];

static struct sigaction previous;
static uintptr_t page_mask;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;

	for (int i = 0; i < FAULT_SLOTS; i++) {
		uintptr_t base = __atomic_load_n(&slots[i].base, __ATOMIC_ACQUIRE);
		size_t len = __atomic_load_n(&slots[i].len, __ATOMIC_RELAXED);
		uintptr_t page = a & ~page_mask;

		if (base == 0 || a < base || a - base >= len)
			continue;
		/* The rest of the mapping reads zeros from now on; the caller sees "nothing there". */
		if (mmap((void *)page, base + len - page, PROT_READ | PROT_WRITE,
			 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
			break; /* cannot recover it: as if it were not ours */
		uint64_t none = 0;
		__atomic_compare_exchange_n(&slots[i].offset, &none, (uint64_t)(a - base) + 1, false,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
		return;
	}
	/* Not a segment's: what would have happened without evring. */
	if (previous.sa_flags & SA_SIGINFO) {
		previous.sa_sigaction(sig, si, uc);
	} else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
		previous.sa_handler(sig);
	} else {
		signal(SIGBUS, SIG_DFL); /* the faulting instruction runs again and ends the process */
	}
}

static void install(void)
{
	struct sigaction sa;

	page_mask = (uintptr_t)sysconf(_SC_PAGESIZE) - 1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &previous);
}

int evr__fault_watch(void *base, size_t len)
{
	pthread_once(&once, install);
	for (int i = 0; i < FAULT_SLOTS; i++) {
		uintptr_t free_slot = 0;

		if (__atomic_load_n(&slots[i].base, __ATOMIC_RELAXED) != 0)
			continue;
		/* Claimed with a placeholder base no address matches (1: len 0), then filled. */
		if (!__atomic_compare_exchange_n(&slots[i].base, &free_slot, 1, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_RELAXED))
			continue;
		__atomic_store_n(&slots[i].len, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&slots[i].offset, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&slots[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
		__atomic_store_n(&slots[i].len, len, __ATOMIC_RELEASE);
		return i + 1;
	}
	return -ENOSPC;
}

void evr__fault_unwatch(int slot)
{
	if (slot <= 0)
		return;
	__atomic_store_n(&slots[slot - 1].len, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&slots[slot - 1].base, 0, __ATOMIC_RELEASE);
}

bool evr__fault_taken(int slot, uint64_t *offset)
{
	uint64_t o = slot <= 0 ? 0 : __atomic_load_n(&slots[slot - 1].offset, __ATOMIC_ACQUIRE);

	if (o && offset)
		*offset = o - 1;
	return o != 0;
}
