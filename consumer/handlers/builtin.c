/*
 * builtin.c: the helpers the built-in handlers share (object accessors,
 * formatting, two small hash maps); spec.c picks a built-in from its spec.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "builtin.h"

int evr__builtin_err(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

FILE *evr__open_output(const char *path, bool append)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0600);
	FILE *f;
	int e;

	if (fd < 0)
		return NULL;
	f = fdopen(fd, append ? "a" : "w");
	if (!f) {
		e = errno;
		close(fd);
		errno = e;
	}
	return f;
}

int evr__out_status(FILE *f)
{
	errno = 0;
	if (fflush_unlocked(f) == 0 && !ferror_unlocked(f))
		return 0;
	return errno ? -errno : -EIO;
}

/* ---- object helpers ------------------------------------------------------------ */

const char *evr__site_name(const struct evr_site_info *site)
{
	return site ? site->name : NULL;
}

const char *evr__site_dispatcher(const struct evr_site_info *site)
{
	return site ? site->dispatcher : NULL;
}

const struct evr_value *evr__field_find(const struct evr_fields *f, const char *name)
{
	if (!f)
		return NULL;
	for (uint32_t i = f->n; i-- > 0;)
		if (f->f[i].name && strcmp(f->f[i].name, name) == 0)
			return &f->f[i].v;
	return NULL;
}

bool evr__value_u64(const struct evr_value *v, uint64_t *out)
{
	if (!v)
		return false;
	switch (v->type) {
	case EVR_V_U64:
		*out = v->u;
		return true;
	case EVR_V_I64:
		if (v->i < 0)
			return false;
		*out = (uint64_t)v->i;
		return true;
	case EVR_V_F64:
		/* 18446744073709551616.0 is 2^64: the first double that does not fit. */
		if (!(v->f >= 0.0 && v->f < 18446744073709551616.0) || v->f != (double)(uint64_t)v->f)
			return false;
		*out = (uint64_t)v->f;
		return true;
	default:
		return false;
	}
}

uint64_t evr__span_duration_ns(const struct evr_span_rec *sp)
{
	if (sp->start_mono_ns && sp->end_mono_ns)
		return sp->end_mono_ns >= sp->start_mono_ns ? sp->end_mono_ns - sp->start_mono_ns : 0;
	return sp->end_ns >= sp->start_ns ? sp->end_ns - sp->start_ns : 0;
}

const char *evr__span_status_name(uint8_t status)
{
	switch (status) {
	case EVR_SPAN_OK:
		return "ok";
	case EVR_SPAN_DROPPED:
		return "dropped";
	case EVR_SPAN_ABANDONED:
		return "abandoned";
	case EVR_SPAN_OPEN:
		return "open";
	default:
		return "unknown";
	}
}

const char *evr__span_flag_name(unsigned bit)
{
	static const char *const names[] = { "no_begin", "missing_parent", "evicted", "producer_died", "detached",
						     "producer_exited" };

	return bit < sizeof(names) / sizeof(names[0]) ? names[bit] : NULL;
}

char *evr__fmt_utc(char *buf, size_t len, uint64_t ns)
{
	time_t secs = (time_t)(ns / 1000000000u);
	struct tm tm;

	if (!gmtime_r(&secs, &tm))
		snprintf(buf, len, "%" PRIu64, ns);
	else
		snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09uZ", tm.tm_year + 1900, tm.tm_mon + 1,
			 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ns % 1000000000u));
	return buf;
}

char *evr__fmt_u128(char *buf, size_t len, unsigned __int128 v)
{
	char tmp[40];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + (unsigned)(v % 10));
		v /= 10;
	} while (v && n < sizeof(tmp));
	if (n + 1 > len)
		n = len - 1; /* callers pass 40 bytes: never taken */
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	buf[n] = '\0';
	return buf;
}

char *evr__fmt_ms(char *buf, size_t len, unsigned __int128 ns)
{
	char whole[40];

	/* Rounded to the microsecond rather than cut, so 1.9996 ms prints 2.000. */
	ns += 500;
	snprintf(buf, len, "%s.%03u", evr__fmt_u128(whole, sizeof(whole), ns / 1000000u),
		 (unsigned)(ns / 1000u % 1000u));
	return buf;
}

char *evr__fmt_label(char *buf, size_t max, const char *s)
{
	size_t n, full, len;

	if (!s)
		s = "(unknown)";
	full = len = strlen(s);
	if (len > max) {
		len = max;
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	for (n = 0; n < len; n++) {
		unsigned char c = (unsigned char)s[n];
		buf[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	if (len < full) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

/* ---- trace walks ------------------------------------------------------------------- */

static int walk_grow(struct evr__walk *w, uint32_t n)
{
	uint32_t **arrays[] = { &w->order, &w->depth, &w->stack, &w->sdepth };
	uint8_t *seen;

	if (n <= w->cap)
		return 0;
	for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
		uint32_t *a = realloc(*arrays[i], (size_t)n * sizeof(uint32_t));
		if (!a)
			return -ENOMEM;
		*arrays[i] = a;
	}
	seen = realloc(w->seen, n);
	if (!seen)
		return -ENOMEM;
	w->seen = seen;
	w->cap = n;
	return 0;
}

/* Index of a link (index + 1, 0: none), or -1 when none or out of range: a bad trace is walked, not trusted. */
static int64_t link_of(const struct evr_trace *tr, uint32_t link)
{
	return link && link <= tr->nspans ? (int64_t)link - 1 : -1;
}

/* Appends the subtree under r, depth-first in sibling order, each span once even if the links loop. */
static void walk_from(struct evr__walk *w, const struct evr_trace *tr, uint32_t r)
{
	uint32_t top = 0;

	w->seen[r] = 1;
	w->stack[top] = r;
	w->sdepth[top++] = 0;
	while (top) {
		uint32_t i = w->stack[--top], dep = w->sdepth[top], nkids = 0;

		w->order[w->n] = i;
		w->depth[w->n++] = dep;
		/* Push the children reversed, so the first child comes out first. */
		for (int64_t c = link_of(tr, tr->first_child[i]); c >= 0 && !w->seen[c];
		     c = link_of(tr, tr->next_sibling[c])) {
			w->seen[c] = 1;
			w->stack[top + nkids] = (uint32_t)c;
			w->sdepth[top + nkids] = dep + 1;
			nkids++;
		}
		for (uint32_t a = top, b = top + nkids - 1; nkids && a < b; a++, b--) {
			uint32_t t = w->stack[a];
			w->stack[a] = w->stack[b];
			w->stack[b] = t;
		}
		top += nkids;
	}
}

int evr__trace_walk(struct evr__walk *w, const struct evr_trace *tr)
{
	if (walk_grow(w, tr->nspans))
		return -ENOMEM;
	w->n = 0;
	if (tr->nspans)
		memset(w->seen, 0, tr->nspans);
	if (tr->root >= 0 && (uint32_t)tr->root < tr->nspans)
		walk_from(w, tr, (uint32_t)tr->root);
	for (uint32_t i = 0; i < tr->nspans; i++)
		if (!w->seen[i] && tr->parent[i] < 0)
			walk_from(w, tr, i);
	for (uint32_t i = 0; i < tr->nspans; i++)
		if (!w->seen[i])
			walk_from(w, tr, i);
	return (int)w->n;
}

void evr__walk_free(struct evr__walk *w)
{
	free(w->order);
	free(w->depth);
	free(w->stack);
	free(w->sdepth);
	free(w->seen);
	memset(w, 0, sizeof(*w));
}

/* ---- hash maps ----------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	/* splitmix64's finalizer: ids are often sequential, and linear probing wants them spread. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return mix64(h);
}

static int strmap_grow(struct evr__strmap *m)
{
	uint32_t cap = m->cap ? m->cap * 2 : 16;
	uint32_t *slots;
	char **keys;

	if (cap < m->cap)
		return -ENOMEM;
	slots = calloc(cap, sizeof(*slots));
	keys = realloc(m->keys, (size_t)cap / 2 * sizeof(*keys));
	if (!slots || !keys) {
		free(slots);
		if (keys)
			m->keys = keys;
		return -ENOMEM;
	}
	m->keys = keys;
	for (uint32_t i = 0; i < m->n; i++) {
		uint32_t s = (uint32_t)hash_str(keys[i]) & (cap - 1);
		while (slots[s])
			s = (s + 1) & (cap - 1);
		slots[s] = i + 1;
	}
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	return 0;
}

int evr__strmap_intern(struct evr__strmap *m, const char *key, uint32_t *idx)
{
	uint32_t s;
	char *copy;

	/* At most half full, so probes stay short; keys[] holds cap / 2 entries. */
	if (m->n + 1 > m->cap / 2 && strmap_grow(m))
		return -ENOMEM;
	s = (uint32_t)hash_str(key) & (m->cap - 1);
	for (; m->slots[s]; s = (s + 1) & (m->cap - 1))
		if (strcmp(m->keys[m->slots[s] - 1], key) == 0) {
			*idx = m->slots[s] - 1;
			return 0;
		}
	copy = strdup(key);
	if (!copy)
		return -ENOMEM;
	m->keys[m->n] = copy;
	m->slots[s] = ++m->n;
	*idx = m->n - 1;
	return 1;
}

void evr__strmap_free(struct evr__strmap *m)
{
	for (uint32_t i = 0; i < m->n; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

static uint32_t pair_home(const struct evr__pairmap *m, uint64_t a, uint64_t b)
{
	return (uint32_t)mix64(a * 0x9e3779b97f4a7c15ull ^ b) & (m->cap - 1);
}

static bool pair_empty(const struct evr__pair_slot *s)
{
	return s->a == 0 && s->b == 0;
}

uint64_t *evr__pairmap_get(struct evr__pairmap *m, uint64_t a, uint64_t b)
{
	if (!m->cap)
		return NULL;
	for (uint32_t s = pair_home(m, a, b);; s = (s + 1) & (m->cap - 1)) {
		struct evr__pair_slot *sl = &m->slots[s];
		if (pair_empty(sl))
			return NULL;
		if (sl->a == a && sl->b == b)
			return &sl->v;
	}
}

static int pairmap_grow(struct evr__pairmap *m)
{
	struct evr__pairmap n = { .cap = m->cap ? m->cap * 2 : 16 };

	if (n.cap < m->cap)
		return -ENOMEM;
	n.slots = calloc(n.cap, sizeof(*n.slots));
	if (!n.slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < m->cap; i++) {
		struct evr__pair_slot *o = &m->slots[i];
		uint32_t s;

		if (pair_empty(o))
			continue;
		for (s = pair_home(&n, o->a, o->b); !pair_empty(&n.slots[s]); s = (s + 1) & (n.cap - 1))
			;
		n.slots[s] = *o;
	}
	n.n = m->n;
	free(m->slots);
	*m = n;
	return 0;
}

uint64_t *evr__pairmap_put(struct evr__pairmap *m, uint64_t a, uint64_t b, bool *added)
{
	uint64_t *v = evr__pairmap_get(m, a, b);
	uint32_t s;

	*added = false;
	if (v)
		return v;
	if (m->n + 1 > m->cap / 2 && pairmap_grow(m))
		return NULL;
	for (s = pair_home(m, a, b); !pair_empty(&m->slots[s]); s = (s + 1) & (m->cap - 1))
		;
	m->slots[s] = (struct evr__pair_slot){ a, b, 0 };
	m->n++;
	*added = true;
	return &m->slots[s].v;
}

bool evr__pairmap_remove(struct evr__pairmap *m, uint64_t a, uint64_t b, uint64_t *v)
{
	uint64_t *p = evr__pairmap_get(m, a, b);
	uint32_t hole, s;

	if (!p)
		return false;
	if (v)
		*v = *p;
	hole = (uint32_t)((struct evr__pair_slot *)(void *)((char *)p - offsetof(struct evr__pair_slot, v)) -
			  m->slots);
	/*
	 * Backward shift: move up every later entry of the cluster whose home is
	 * not between the hole and it (cyclically), so lookups never need tombstones.
	 */
	for (s = (hole + 1) & (m->cap - 1); !pair_empty(&m->slots[s]); s = (s + 1) & (m->cap - 1)) {
		uint32_t home = pair_home(m, m->slots[s].a, m->slots[s].b);
		bool stays = hole <= s ? (home > hole && home <= s) : (home > hole || home <= s);

		if (stays)
			continue;
		m->slots[hole] = m->slots[s];
		hole = s;
	}
	m->slots[hole] = (struct evr__pair_slot){ 0, 0, 0 };
	m->n--;
	return true;
}

uint32_t evr__pairmap_remove_a(struct evr__pairmap *m, uint64_t a, void (*fn)(void *arg, uint64_t b, uint64_t v),
			       void *arg)
{
	uint32_t removed = 0;

	/* Each removal may shift a later entry into the slot just looked at: look at it again. */
	for (uint32_t i = 0; i < m->cap;) {
		struct evr__pair_slot sl = m->slots[i];

		if (pair_empty(&sl) || sl.a != a) {
			i++;
			continue;
		}
		evr__pairmap_remove(m, sl.a, sl.b, NULL);
		if (fn)
			fn(arg, sl.b, sl.v);
		removed++;
	}
	return removed;
}

void evr__pairmap_free(struct evr__pairmap *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}
