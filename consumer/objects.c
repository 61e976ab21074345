/*
 * objects.c: the immutable, reference-counted objects handlers receive.
 *
 * An object is built whole on the drain thread, then only read. Its count
 * starts at 1 (the builder's); every handler queue it enters takes one, and
 * the last unref frees it together with what it references (fields blocks,
 * and a trace's spans). Counts change with atomic add/sub because handler
 * threads drop their references concurrently.
 *
 * ONE BLOCK PER OBJECT
 * ====================
 * Every object, and every fields block, is one block: a trace holds its
 * arrays after itself, and an event decoded from the ring holds its fields
 * after itself ("embedded" fields, allocated by evr__event_fields_new when
 * the record is decoded, before the event exists). Embedded fields carry the
 * count EMBEDDED and no count of their own: a reference to them is a
 * reference to their event, so a rec that holds them holds the event's
 * block, and evr__event_new takes that reference over instead of allocating.
 *
 * POOLS
 * =====
 * Blocks come in four size classes (128 .. 1024 bytes with the header;
 * larger ones are malloc'ed and freed as they are). Each thread keeps a
 * stack of free blocks per class (pointers, in a cache reached through one
 * initial-exec thread-local pointer). A thread that frees more than it
 * allocates (a handler thread dropping the drain thread's objects) keeps up
 * to LOCAL_MAX, then fills magazines of MAG_N pointers and pushes each full
 * one onto the class's global return stack (ck_stack, one CAS per
 * magazine). A thread whose stack runs empty (the drain thread) takes every
 * magazine from that stack at once (one atomic exchange) and uses them one
 * by one; with none there, it mallocs. So no object is free()d on a thread
 * other than the one whose stack it last sat on, a free writes nothing into
 * the block, and the drain thread's allocation is an array pop that fetches
 * the block it will hand out PREFETCH_DIST allocations later (the block
 * sits in another CPU's cache, or none). What a thread holds when it exits
 * goes back to the return stacks (a pthread key destructor). The pools are
 * shared by every consumer of the process: an object may outlive its
 * consumer (a handler abandoned in a call drops it later), and its block
 * must still have somewhere to go.
 *
 * Memory held: the return stacks hold at most what was live at once; a
 * thread that takes them keeps POOL_MAGS magazines per class and frees the
 * rest. Under AddressSanitizer a free block's payload is poisoned, so a use
 * after the last unref is still reported.
 *
 * Ordering: a magazine is written (pointers, count) by the thread that
 * pushes it, then published by ck_stack_push_upmc's CAS;
 * ck_stack_batch_pop_upmc's exchange takes it (P1 / P2 below). The blocks'
 * own contents were last written before the last unref, whose
 * release/acquire (drop_last) orders them before the free. ThreadSanitizer
 * cannot see ck_pr's inline assembly, so a TSan build spells the two stack
 * operations with __atomic builtins, as hub.c does for ck_ring.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <evring/atomic.h> /* EVR_TSAN */

#ifndef EVR_TSAN
#include <ck_stack.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include "objects.h"
#include "source.h"

#define NCLS 4
#define CLS_MALLOC 0xffu
#define LOCAL_MAX 128u	 /* free blocks a thread keeps per class; past them it returns magazines */
#define MAG_N 62u	 /* blocks per magazine */
#define POOL_MAGS 1024u /* magazines per class a thread keeps when it takes the return stack */
#define PREFETCH_DIST 4u /* blocks fetched ahead of the allocation that hands them out */
#define EMBEDDED UINT32_MAX

static const uint32_t cls_size[NCLS] = { 128, 256, 512, 1024 };

/* ---- the return stacks ------------------------------------------------------------- */

#ifndef EVR_TSAN
typedef ck_stack_entry_t ret_entry;
typedef ck_stack_t ret_stack;

static void ret_push(ret_stack *s, ret_entry *e)
{
	ck_stack_push_upmc(s, e); /* P1: publishes the chain; pairs with P2 */
}

static ret_entry *ret_pop_all(ret_stack *s)
{
	if (!ck_pr_load_ptr(&s->head))
		return NULL; /* nothing: no atomic read-modify-write */
	return ck_stack_batch_pop_upmc(s); /* P2: takes every chain; pairs with P1 */
}
#else
typedef struct ret_entry {
	struct ret_entry *next;
} ret_entry;
typedef struct {
	ret_entry *head;
} ret_stack;

static void ret_push(ret_stack *s, ret_entry *e)
{
	ret_entry *old = __atomic_load_n(&s->head, __ATOMIC_RELAXED);

	do
		e->next = old;
	while (!__atomic_compare_exchange_n(&s->head, &old, e, true, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED)); /* P1, pairs with P2 */
}

static ret_entry *ret_pop_all(ret_stack *s)
{
	if (!__atomic_load_n(&s->head, __ATOMIC_RELAXED))
		return NULL;
	return __atomic_exchange_n(&s->head, NULL, __ATOMIC_ACQUIRE); /* P2, pairs with P1 */
}
#endif

/* The header before every pooled block: its class, for whoever frees it. */
struct blk {
	uint32_t cls;
	uint32_t pad;
};
#define HDR ((sizeof(struct blk) + 7) & ~(size_t)7)

/* A batch of free blocks of one class on its way back: pointers, so the blocks themselves are not written. */
struct mag {
	ret_entry se; /* on ret[cls] */
	uint32_t n;
	struct blk *b[MAG_N];
};

static ret_stack ret[NCLS];

/* Per thread and class: free blocks (a stack of pointers), magazines taken, the one being filled. */
struct tcache {
	struct blk *stack[NCLS][LOCAL_MAX];
	uint32_t n[NCLS];
	ret_entry *spare[NCLS];
	struct mag *out[NCLS];
};
/* One pointer of thread-local storage (initial-exec: no __tls_get_addr on the way). */
static __thread struct tcache *tcp __attribute__((tls_model("initial-exec")));
static pthread_key_t tc_key;
static pthread_once_t tc_once = PTHREAD_ONCE_INIT;
static bool tc_key_ok;

static struct mag *of_entry(ret_entry *e)
{
	return (struct mag *)((char *)e - offsetof(struct mag, se));
}

static void mag_free(struct mag *m)
{
	for (uint32_t i = 0; i < m->n; i++)
		free(m->b[i]);
	free(m);
}

/* Gives b back to the return stack of class c, through this thread's magazine; false without memory. */
static bool give_back(struct tcache *t, unsigned c, struct blk *b)
{
	struct mag *m = t->out[c];

	if (!m) {
		m = malloc(sizeof(*m));
		if (!m)
			return false;
		m->n = 0;
		t->out[c] = m;
	}
	m->b[m->n++] = b;
	if (m->n == MAG_N) {
		ret_push(&ret[c], &m->se);
		t->out[c] = NULL;
	}
	return true;
}

/* A thread exits: everything it holds goes back to the return stacks. */
static void tc_release(void *arg)
{
	struct tcache *t = arg;

	for (unsigned c = 0; c < NCLS; c++) {
		while (t->n[c] && give_back(t, c, t->stack[c][t->n[c] - 1]))
			t->n[c]--;
		while (t->n[c]) /* no memory for a magazine: let them go */
			free(t->stack[c][--t->n[c]]);
		if (t->out[c] && t->out[c]->n)
			ret_push(&ret[c], &t->out[c]->se);
		else
			free(t->out[c]);
		for (ret_entry *e = t->spare[c], *en; e; e = en) {
			en = e->next;
			ret_push(&ret[c], e);
		}
	}
	tcp = NULL;
	free(t);
}

static void tc_key_init(void)
{
	tc_key_ok = pthread_key_create(&tc_key, tc_release) == 0;
}

/* The thread's cache, made at its first use, returned at its exit; NULL without memory (no pooling then). */
static struct tcache *tc_get(void)
{
	struct tcache *t = tcp;

	if (EVR_LIKELY(t))
		return t;
	pthread_once(&tc_once, tc_key_init);
	if (!tc_key_ok || !(t = calloc(1, sizeof(*t))))
		return NULL;
	if (pthread_setspecific(tc_key, t) != 0) {
		free(t);
		return NULL;
	}
	tcp = t;
	return t;
}

static unsigned cls_of(size_t total)
{
	for (unsigned c = 0; c < NCLS; c++)
		if (total <= cls_size[c])
			return c;
	return CLS_MALLOC;
}

/* Fills the empty stack of class c from a magazine: one taken earlier, else every one returned. */
static bool refill(struct tcache *t, unsigned c)
{
	ret_entry *e = t->spare[c];
	struct mag *m;

	if (!e) {
		uint32_t kept = 0;
		ret_entry *all = ret_pop_all(&ret[c]), *en, **tail = &t->spare[c];

		for (e = all; e; e = en) {
			en = e->next;
			if (kept < POOL_MAGS) {
				*tail = e;
				tail = &e->next;
				kept++;
			} else {
				mag_free(of_entry(e)); /* past what a thread keeps */
			}
		}
		*tail = NULL;
		e = t->spare[c];
		if (!e)
			return false;
	}
	t->spare[c] = e->next;
	m = of_entry(e);
	memcpy(t->stack[c], m->b, m->n * sizeof(m->b[0]));
	t->n[c] = m->n;
	free(m);
	return true;
}

/* Starts fetching a block the thread will hand out soon, for writing. */
static void warm(unsigned c, const struct blk *b)
{
	for (uint32_t off = 0; off < cls_size[c] && off < 256; off += 64)
		__builtin_prefetch((const char *)b + off, 1, 3);
}

/* A block with room for size bytes after the header; its payload is not cleared. */
static void *blk_get(size_t size)
{
	size_t total = HDR + size;
	unsigned c = cls_of(total);
	struct tcache *t;
	struct blk *b;

	if (c == CLS_MALLOC) {
		b = malloc(total);
		if (!b)
			return NULL;
		b->cls = CLS_MALLOC;
		return (char *)b + HDR;
	}
	t = tc_get();
	if (t && (t->n[c] || refill(t, c))) {
		b = t->stack[c][--t->n[c]];
		/*
		 * Blocks come back from handler threads, often from another
		 * CPU's cache: the one handed out PREFETCH_DIST calls from now is
		 * fetched now, so that no call waits for its block.
		 */
		if (t->n[c] >= PREFETCH_DIST)
			warm(c, t->stack[c][t->n[c] - PREFETCH_DIST]);
		UNPOISON((char *)b + HDR, cls_size[c] - HDR);
	} else {
		b = malloc(cls_size[c]);
		if (!b)
			return NULL;
		b->cls = c;
	}
	return (char *)b + HDR;
}

static void blk_put(void *payload)
{
	struct blk *b = (struct blk *)((char *)payload - HDR);
	unsigned c = b->cls;
	struct tcache *t;

	if (c == CLS_MALLOC || !(t = tc_get())) {
		free(b);
		return;
	}
	POISON(payload, cls_size[c] - HDR);
	if (t->n[c] < LOCAL_MAX)
		t->stack[c][t->n[c]++] = b;
	else if (!give_back(t, c, b))
		free(b);
}

/* ---- fields ---------------------------------------------------------------------------- */

static struct evr_fields empty_fields = { .refs = UINT32_MAX / 2, .n = 0 };

/* Where an event's embedded fields sit in its block. */
#define EV_FIELDS_OFF ((sizeof(struct evr_event) + 7) & ~(size_t)7)

static bool embedded(const struct evr_fields *f)
{
	/* Never changes for embedded fields; relaxed because other blocks' counts change concurrently. */
	return __atomic_load_n(&f->refs, __ATOMIC_RELAXED) == EMBEDDED;
}

static struct evr_event *event_of(struct evr_fields *f)
{
	return (struct evr_event *)((char *)f - EV_FIELDS_OFF);
}

struct evr_fields *evr__fields_empty(void)
{
	return &empty_fields;
}

struct evr_fields *evr__fields_new(uint32_t n, size_t bytes, char **strings)
{
	size_t head = sizeof(struct evr_fields) + (size_t)n * sizeof(struct evr_field);
	struct evr_fields *f = blk_get(head + bytes);

	if (!f)
		return NULL;
	memset(f, 0, head);
	f->refs = 1;
	f->n = n;
	if (strings)
		*strings = (char *)f + head;
	return f;
}

struct evr_fields *evr__event_fields_new(uint32_t n, size_t bytes, char **strings)
{
	size_t head = sizeof(struct evr_fields) + (size_t)n * sizeof(struct evr_field);
	struct evr_event *ev = blk_get(EV_FIELDS_OFF + head + bytes);
	struct evr_fields *f;

	if (!ev)
		return NULL;
	f = (struct evr_fields *)((char *)ev + EV_FIELDS_OFF);
	memset(ev, 0, EV_FIELDS_OFF + head);
	ev->obj.refs = 1; /* the holder of f holds this */
	ev->obj.kind = EVR_OBJ_EVENT;
	ev->fields = f;
	f->refs = EMBEDDED;
	f->n = n;
	if (strings)
		*strings = (char *)f + head;
	return f;
}

void evr__fields_ref(struct evr_fields *f)
{
	if (!f || f == &empty_fields)
		return;
	if (embedded(f))
		evr_obj_ref(event_of(f));
	else
		__atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
}

/* The last reference: when the count reads 1, the caller holds the only one and nobody can add one. */
static bool drop_last(uint32_t *refs)
{
	/* Acquire: pairs with the release half of the other holders' decrements, so their reads are done. */
	if (__atomic_load_n(refs, __ATOMIC_ACQUIRE) == 1)
		return true;
	return __atomic_sub_fetch(refs, 1, __ATOMIC_ACQ_REL) == 0;
}

void evr__fields_unref(struct evr_fields *f)
{
	if (!f || f == &empty_fields)
		return;
	if (embedded(f))
		evr_obj_unref(event_of(f));
	else if (drop_last(&f->refs))
		blk_put(f);
}

/* ---- objects ---------------------------------------------------------------------------------- */

static void *obj_new(size_t size, uint8_t kind)
{
	struct evr_obj *o = blk_get(size);

	if (o) {
		memset(o, 0, size);
		o->refs = 1;
		o->kind = kind;
	}
	return o;
}

struct evr_event *evr__event_new(struct evr_rec *r, uint64_t trace_id)
{
	struct evr_event *ev;

	/* The flag, not the block's count: the rec is in cache, the block (decoded a round ago) may not be. */
	if (r->fields_in_event && r->fields) {
		ev = event_of(r->fields); /* the rec's reference becomes the builder's */
		r->fields = NULL;
		r->fields_in_event = false;
	} else {
		ev = obj_new(sizeof(*ev), EVR_OBJ_EVENT);
		if (!ev)
			return NULL;
		ev->fields = r->fields ? r->fields : evr__fields_empty();
		evr__fields_ref(ev->fields);
	}
	ev->src = &r->src->pub;
	ev->site = r->site;
	ev->ts_ns = r->real_ns;
	ev->mono_ns = r->mono_ns;
	ev->span_id = r->span_id;
	ev->trace_id = trace_id;
	ev->tid = r->tid;
	ev->late = r->late;
	return ev;
}

struct evr_span_rec *evr__span_new(void)
{
	struct evr_span_rec *sp = obj_new(sizeof(*sp), EVR_OBJ_SPAN);

	if (sp) {
		sp->begin_fields = evr__fields_empty();
		sp->end_fields = evr__fields_empty();
	}
	return sp;
}

/* A trace and its four arrays, in one block. */
struct evr_trace *evr__trace_new(uint32_t nspans)
{
	size_t n = nspans ? nspans : 1;
	size_t head = (sizeof(struct evr_trace) + 7) & ~(size_t)7;
	size_t size = head + n * (sizeof(struct evr_span_rec *) + sizeof(int32_t) + 2 * sizeof(uint32_t));
	struct evr_trace *tr;
	char *p;

	if (nspans > (UINT32_MAX - 4096) / 32)
		return NULL;
	tr = obj_new(size, EVR_OBJ_TRACE);
	if (!tr)
		return NULL;
	p = (char *)tr + head;
	tr->spans = (struct evr_span_rec **)p;
	p += n * sizeof(*tr->spans);
	tr->parent = (int32_t *)p;
	p += n * sizeof(*tr->parent);
	tr->first_child = (uint32_t *)p;
	p += n * sizeof(*tr->first_child);
	tr->next_sibling = (uint32_t *)p;
	tr->nspans = nspans;
	tr->root = -1;
	return tr;
}

struct evr_lost *evr__lost_new(const struct evr_rec *r)
{
	struct evr_lost *l = obj_new(sizeof(*l), EVR_OBJ_LOST);

	if (!l)
		return NULL;
	l->src = &r->src->pub;
	l->tid = r->tid;
	l->lane = r->lane;
	l->count = r->lost_count;
	l->ts_ns = r->real_ns;
	l->first_ns = r->lost_first_real_ns;
	l->reports = 1;
	return l;
}

struct evr_lost *evr__lost_copy(const struct evr_lost *from)
{
	struct evr_lost *l = obj_new(sizeof(*l), EVR_OBJ_LOST);

	if (!l)
		return NULL;
	l->src = from->src;
	l->tid = from->tid;
	l->lane = from->lane;
	l->count = from->count;
	l->ts_ns = from->ts_ns;
	l->first_ns = from->first_ns;
	l->reports = from->reports ? from->reports : 1;
	return l;
}

struct evr_skipped *evr__skipped_new(const struct evr_skipped *gap)
{
	struct evr_skipped *s = obj_new(sizeof(*s), EVR_OBJ_SKIPPED);

	if (!s)
		return NULL;
	*s = *gap;
	s->obj.refs = 1;
	s->obj.kind = EVR_OBJ_SKIPPED;
	return s;
}

struct evr__source_end *evr__source_end_new(struct evr_src *src)
{
	struct evr__source_end *e = obj_new(sizeof(*e), EVR__OBJ_SOURCE_END);

	if (e)
		e->src = src;
	return e;
}

void evr_obj_ref(const void *obj)
{
	struct evr_obj *o = (struct evr_obj *)obj;

	__atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED);
}

void evr__obj_ref_n(const void *obj, uint32_t n)
{
	struct evr_obj *o = (struct evr_obj *)obj;

	if (n)
		__atomic_add_fetch(&o->refs, n, __ATOMIC_RELAXED);
}

static void obj_free(struct evr_obj *o)
{
	switch (o->kind) {
	case EVR_OBJ_EVENT: {
		struct evr_event *ev = (struct evr_event *)o;
		if ((char *)ev->fields != (char *)ev + EV_FIELDS_OFF) /* embedded fields go with the block */
			evr__fields_unref(ev->fields);
		break;
	}
	case EVR_OBJ_SPAN: {
		struct evr_span_rec *sp = (struct evr_span_rec *)o;
		evr__fields_unref(sp->begin_fields);
		evr__fields_unref(sp->end_fields);
		break;
	}
	case EVR_OBJ_TRACE: {
		struct evr_trace *tr = (struct evr_trace *)o;
		for (uint32_t i = 0; tr->spans && i < tr->nspans; i++)
			if (tr->spans[i])
				evr_obj_unref(tr->spans[i]);
		break;
	}
	case EVR__OBJ_SOURCE_END:
		/* Every queue that took it passed it: the drain thread may free the source (pairs with its acquire). */
		__atomic_store_n(&((struct evr__source_end *)o)->src->released, 1, __ATOMIC_RELEASE);
		break;
	default:
		break;
	}
	blk_put(o);
}

struct evr_metric *evr__metric_new(const struct evr_source *src, uint64_t ts_ns, uint64_t mono_ns, const char *name,
				   const char *unit, double value)
{
	struct evr_metric *m = obj_new(sizeof(*m), EVR_OBJ_METRIC);

	if (m) {
		m->src = src;
		m->ts_ns = ts_ns;
		m->mono_ns = mono_ns;
		m->name = name;
		m->unit = unit;
		m->value = value;
	}
	return m;
}

struct evr_run_info *evr__run_new(const struct evr_source *src, const char *run_id, const char *experiment,
				  uint64_t start_ns, const struct evr_param *params, uint32_t n)
{
	size_t bytes = strlen(run_id) + 1 + strlen(experiment) + 1, size;
	struct evr_run_info *r;
	struct evr_param *p;
	char *s;

	for (uint32_t i = 0; i < n; i++)
		bytes += strlen(params[i].key) + 1 + strlen(params[i].value) + 1;
	size = sizeof(*r) + n * sizeof(*p) + bytes;
	r = obj_new(size, EVR_OBJ_RUN);
	if (!r)
		return NULL;
	p = (struct evr_param *)(r + 1);
	s = (char *)(p + n);
	r->src = src;
	r->start_ns = start_ns;
	r->nparams = n;
	r->params = p;
	r->run_id = s;
	s = stpcpy(s, run_id) + 1;
	r->experiment = s;
	s = stpcpy(s, experiment) + 1;
	for (uint32_t i = 0; i < n; i++) {
		p[i].key = s;
		s = stpcpy(s, params[i].key) + 1;
		p[i].value = s;
		s = stpcpy(s, params[i].value) + 1;
	}
	return r;
}

void evr_obj_unref(const void *obj)
{
	struct evr_obj *o = (struct evr_obj *)obj;

	if (o && drop_last(&o->refs))
		obj_free(o);
}
