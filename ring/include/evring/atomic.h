/*
 * evring/atomic.h: the shared-memory accessors every evring module uses.
 *
 * Normal builds go through Concurrency Kit: ck_pr_load_* / ck_pr_store_* for
 * the access and ck_pr_fence_acquire / ck_pr_fence_release for its ordering.
 * On x86-64 (TSO) those fences compile to nothing but a compiler barrier, which
 * is why the exclusive-lane write path costs a few plain stores.
 *
 * ThreadSanitizer cannot see the ordering of ck's inline assembly, so a TSan
 * build (EVR_TSAN) maps the same names onto the compiler's __atomic builtins
 * with the same orderings. The protocol is identical; only the spelling that
 * TSan reads changes.
 *
 * Names: evr_ld_acq_64 is a load-acquire, evr_st_rel_64 a store-release,
 * evr_ld_64 / evr_st_64 are single-copy-atomic accesses with no ordering.
 */
#ifndef EVRING_ATOMIC_H
#define EVRING_ATOMIC_H

#include <stdbool.h>
#include <stdint.h>

#if defined(__SANITIZE_THREAD__)
#define EVR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EVR_TSAN 1
#endif
#endif

#ifndef EVR_TSAN
#include <ck_pr.h>
#endif

#ifdef EVR_TSAN
#define EVR__LD(p, o) __atomic_load_n((p), (o))
#define EVR__ST(p, v, o) __atomic_store_n((p), (v), (o))

static inline uint64_t evr_ld_64(const uint64_t *p) { return EVR__LD(p, __ATOMIC_RELAXED); }
static inline uint64_t evr_ld_acq_64(const uint64_t *p) { return EVR__LD(p, __ATOMIC_ACQUIRE); }
static inline void evr_st_64(uint64_t *p, uint64_t v) { EVR__ST(p, v, __ATOMIC_RELAXED); }
static inline void evr_st_rel_64(uint64_t *p, uint64_t v) { EVR__ST(p, v, __ATOMIC_RELEASE); }
static inline uint32_t evr_ld_32(const uint32_t *p) { return EVR__LD(p, __ATOMIC_RELAXED); }
static inline uint32_t evr_ld_acq_32(const uint32_t *p) { return EVR__LD(p, __ATOMIC_ACQUIRE); }
static inline void evr_st_32(uint32_t *p, uint32_t v) { EVR__ST(p, v, __ATOMIC_RELAXED); }
static inline void evr_st_rel_32(uint32_t *p, uint32_t v) { EVR__ST(p, v, __ATOMIC_RELEASE); }

/* Full-barrier compare-and-swap; on failure *expected holds the value seen. */
static inline bool evr_cas_64(uint64_t *p, uint64_t *expected, uint64_t desired)
{
	return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_SEQ_CST,
					   __ATOMIC_SEQ_CST);
}
static inline uint64_t evr_faa_64(uint64_t *p, uint64_t d) { return __atomic_fetch_add(p, d, __ATOMIC_SEQ_CST); }
static inline void evr_inc_own_64(uint64_t *p) { EVR__ST(p, EVR__LD(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED); }
static inline uint64_t evr_fas_64(uint64_t *p, uint64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline void *evr_ld_acq_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void evr_st_rel_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline bool evr_cas_ptr(void **p, void **expected, void *desired)
{
	return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
#else
static inline uint64_t evr_ld_64(const uint64_t *p) { return ck_pr_load_64(p); }
static inline uint64_t evr_ld_acq_64(const uint64_t *p)
{
	uint64_t v = ck_pr_load_64(p);
	ck_pr_fence_acquire();
	return v;
}
static inline void evr_st_64(uint64_t *p, uint64_t v) { ck_pr_store_64(p, v); }
static inline void evr_st_rel_64(uint64_t *p, uint64_t v)
{
	ck_pr_fence_release();
	ck_pr_store_64(p, v);
}
static inline uint32_t evr_ld_32(const uint32_t *p) { return ck_pr_load_32(p); }
static inline uint32_t evr_ld_acq_32(const uint32_t *p)
{
	uint32_t v = ck_pr_load_32(p);
	ck_pr_fence_acquire();
	return v;
}
static inline void evr_st_32(uint32_t *p, uint32_t v) { ck_pr_store_32(p, v); }
static inline void evr_st_rel_32(uint32_t *p, uint32_t v)
{
	ck_pr_fence_release();
	ck_pr_store_32(p, v);
}
/*
 * ck's read-modify-writes order nothing on ARM and POWER (a plain cas or an
 * ldxr/stxr loop), while the protocol needs each to be both an acquire and a
 * release. The fences around them cost nothing on x86-64, where a locked
 * instruction is already a full barrier and these fences are compiler barriers.
 */
static inline bool evr_cas_64(uint64_t *p, uint64_t *expected, uint64_t desired)
{
	bool ok;

	ck_pr_fence_release();
	ok = ck_pr_cas_64_value(p, *expected, desired, expected);
	ck_pr_fence_acquire();
	return ok;
}
static inline uint64_t evr_faa_64(uint64_t *p, uint64_t d)
{
	uint64_t v;

	ck_pr_fence_release();
	v = ck_pr_faa_64(p, d);
	ck_pr_fence_acquire();
	return v;
}
static inline uint64_t evr_fas_64(uint64_t *p, uint64_t v)
{
	uint64_t old;

	ck_pr_fence_release();
	old = ck_pr_fas_64(p, v);
	ck_pr_fence_acquire();
	return old;
}
/*
 * Adds one to a counter that only this thread stores and others only read:
 * no lock prefix, no ordering, one instruction on x86-64 (an aligned
 * read-modify-write whose store is single-copy atomic, so a reader sees the
 * old value or the new one).
 */
static inline void evr_inc_own_64(uint64_t *p)
{
#if defined(__x86_64__)
	__asm__ __volatile__("addq $1, %0" : "+m"(*p));
#else
	ck_pr_store_64(p, ck_pr_load_64(p) + 1);
#endif
}
static inline void *evr_ld_acq_ptr(void *const *p)
{
	void *v = ck_pr_load_ptr(p);
	ck_pr_fence_acquire();
	return v;
}
static inline void evr_st_rel_ptr(void **p, void *v)
{
	ck_pr_fence_release();
	ck_pr_store_ptr(p, v);
}
static inline bool evr_cas_ptr(void **p, void **expected, void *desired)
{
	bool ok;

	ck_pr_fence_release();
	ok = ck_pr_cas_ptr_value(p, *expected, desired, expected);
	ck_pr_fence_acquire();
	return ok;
}
#endif

#endif /* EVRING_ATOMIC_H */
