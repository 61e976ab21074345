/*
 * source.c: a source's metadata tables (source.h). The producer describes
 * its sites, dispatchers, threads and process in the segment's metadata area;
 * each entry is read as hostile input (checked by mpcheck before msgpack-c
 * unpacks it, then field by field), and one that fails is counted and skipped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "mpcheck.h"
#include "source.h"

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
	size_t klen = strlen(key);

	if (map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen && !memcmp(k->via.str.ptr, key, klen))
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

/* A copy of a string value (NUL-terminated), or of dflt when absent or not a string. */
static char *map_str(const msgpack_object *map, const char *key, const char *dflt)
{
	const msgpack_object *v = map_get(map, key);

	if (v && v->type == MSGPACK_OBJECT_STR)
		return strndup(v->via.str.ptr, v->via.str.size);
	return strdup(dflt);
}

static bool map_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
	const msgpack_object *v = map_get(map, key);

	if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return false;
	*out = v->via.u64;
	return true;
}

static bool map_bool(const msgpack_object *map, const char *key, bool dflt)
{
	const msgpack_object *v = map_get(map, key);

	return v && v->type == MSGPACK_OBJECT_BOOLEAN ? v->via.boolean : dflt;
}

static uint8_t type_of(const char *name)
{
	static const char *names[] = { "", "i64", "u64", "f64", "bool", "str", "i32", "u32" };

	for (uint8_t i = 1; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return i;
	return 0;
}

static void site_free(struct evr_site_info *si)
{
	if (!si)
		return;
	for (uint32_t i = 0; si->field_names && i < si->nfields; i++)
		free((char *)si->field_names[i]);
	free((void *)si->field_names);
	free((void *)si->field_types);
	free((void *)si->field_content);
	free((char *)si->name);
	free((char *)si->dispatcher);
	free((char *)si->file);
	free((char *)si->func);
	free(si);
}

static uint64_t hash_id(uint64_t id)
{
	id ^= id >> 31;
	id *= 0x9e3779b97f4a7c15ull;
	return id ^ (id >> 29);
}

static int sites_put(struct evr_src *s, struct evr_site_info *si)
{
	if ((s->sites_n + 1) * 2 > s->sites_cap) {
		uint32_t cap = s->sites_cap ? s->sites_cap * 2 : 64;
		struct evr_site_info **t = calloc(cap, sizeof(*t));

		if (!t)
			return -ENOMEM;
		for (uint32_t i = 0; i < s->sites_cap; i++) {
			struct evr_site_info *o = s->sites[i];
			uint32_t j;
			if (!o)
				continue;
			for (j = (uint32_t)hash_id(o->id) & (cap - 1); t[j]; j = (j + 1) & (cap - 1))
				;
			t[j] = o;
		}
		free(s->sites);
		s->sites = t;
		s->sites_cap = cap;
	}
	for (uint32_t j = (uint32_t)hash_id(si->id) & (s->sites_cap - 1);; j = (j + 1) & (s->sites_cap - 1)) {
		if (!s->sites[j]) {
			s->sites[j] = si;
			s->sites_n++;
			return 0;
		}
		if (s->sites[j]->id == si->id) {
			site_free(si); /* the same entry read twice cannot happen; a hostile duplicate keeps the first */
			return 0;
		}
	}
}

const struct evr_site_info *evr__src_site(const struct evr_src *s, uint64_t id)
{
	if (!s->sites_cap)
		return NULL;
	for (uint32_t j = (uint32_t)hash_id(id) & (s->sites_cap - 1);; j = (j + 1) & (s->sites_cap - 1)) {
		if (!s->sites[j])
			return NULL;
		if (s->sites[j]->id == id)
			return s->sites[j];
	}
}

static int read_site(struct evr_src *s, uint64_t id, const msgpack_object *m)
{
	static const char *kinds[] = { "", "event", "span_begin", "span_end" };
	const msgpack_object *fields = map_get(m, "fields");
	struct evr_site_info *si = calloc(1, sizeof(*si));
	char *kind = map_str(m, "kind", "");
	uint64_t line = 0;
	uint32_t n;

	if (!si || !kind || !fields || fields->type != MSGPACK_OBJECT_ARRAY || fields->via.array.size > 64) {
		free(kind);
		free(si);
		return -EBADMSG;
	}
	for (uint8_t k = 1; k <= 3; k++)
		if (!strcmp(kind, kinds[k]))
			si->kind = k;
	free(kind);
	n = fields->via.array.size;
	si->id = id;
	map_u64(m, "line", &line);
	si->line = (uint32_t)line;
	si->nfields = n;
	si->name = map_str(m, "name", "");
	si->dispatcher = map_str(m, "dispatcher", "");
	si->file = map_str(m, "file", "");
	si->func = map_str(m, "func", "");
	si->field_names = calloc(n + 1, sizeof(char *));
	si->field_types = calloc(n + 1, 1);
	si->field_content = calloc(n + 1, sizeof(bool));
	if (!si->kind || !si->name || !si->dispatcher || !si->file || !si->func || !si->field_names ||
	    !si->field_types || !si->field_content) {
		site_free(si);
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *f = &fields->via.array.ptr[i];
		char *type = map_str(f, "type", "");

		((const char **)si->field_names)[i] = map_str(f, "name", "");
		((uint8_t *)si->field_types)[i] = type ? type_of(type) : 0;
		((bool *)si->field_content)[i] = map_bool(f, "content", false);
		free(type);
		if (!si->field_names[i] || !si->field_types[i]) {
			site_free(si);
			return -EBADMSG;
		}
	}
	return sites_put(s, si);
}

static int read_dispatcher(struct evr_src *s, const msgpack_object *m)
{
	char *path = map_str(m, "path", "");
	bool propagate = map_bool(m, "propagate", true);

	if (!path || !*path) {
		free(path);
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < s->dispatchers_n; i++) {
		if (!strcmp(s->dispatchers[i].path, path)) { /* a later declaration wins */
			s->dispatchers[i].propagate = propagate;
			free(path);
			return 0;
		}
	}
	if (s->dispatchers_n == s->dispatchers_cap) {
		uint32_t cap = s->dispatchers_cap ? s->dispatchers_cap * 2 : 8;
		void *t = realloc(s->dispatchers, cap * sizeof(*s->dispatchers));
		if (!t) {
			free(path);
			return -ENOMEM;
		}
		s->dispatchers = t;
		s->dispatchers_cap = cap;
	}
	s->dispatchers[s->dispatchers_n].path = path;
	s->dispatchers[s->dispatchers_n].propagate = propagate;
	s->dispatchers_n++;
	return 0;
}

/* A msgpack string into dst[cap], cut to fit (a size past INT_MAX must not reach "%.*s"). */
static void copy_bounded(char *dst, size_t cap, const msgpack_object *o)
{
	size_t n = o->via.str.size < cap ? o->via.str.size : cap - 1;

	memcpy(dst, o->via.str.ptr, n);
	dst[n] = 0;
}

static int read_thread(struct evr_src *s, const msgpack_object *m)
{
	uint64_t tid = 0, lane = 0;
	const msgpack_object *name = map_get(m, "name");
	struct evr_thread_info *t;

	if (!map_u64(m, "tid", &tid) || tid > UINT32_MAX)
		return -EBADMSG;
	map_u64(m, "lane", &lane);
	if (s->threads_n == s->threads_cap) {
		uint32_t cap = s->threads_cap ? s->threads_cap * 2 : 16;
		void *nt = realloc(s->threads, cap * sizeof(*s->threads));
		if (!nt)
			return -ENOMEM;
		s->threads = nt;
		s->threads_cap = cap;
	}
	t = &s->threads[s->threads_n++];
	memset(t, 0, sizeof(*t));
	t->tid = (uint32_t)tid;
	t->lane = (uint32_t)lane;
	if (name && name->type == MSGPACK_OBJECT_STR)
		copy_bounded(t->name, sizeof(t->name), name);
	return 0;
}

static void read_process(struct evr_src *s, const msgpack_object *m)
{
	const msgpack_object *v = map_get(m, "cmdline");

	if (v && v->type == MSGPACK_OBJECT_STR)
		copy_bounded(s->cmdline, sizeof(s->cmdline), v);
	v = map_get(m, "program");
	if (v && v->type == MSGPACK_OBJECT_STR)
		copy_bounded(s->program, sizeof(s->program), v);
}

const struct evr_thread_info *evr__src_thread(const struct evr_src *s, uint32_t tid)
{
	/* The latest entry for a tid wins: thread ids are reused. */
	for (uint32_t i = s->threads_n; i-- > 0;)
		if (s->threads[i].tid == tid)
			return &s->threads[i];
	return NULL;
}

static bool propagates(const struct evr_src *s, const char *path, size_t len)
{
	for (uint32_t i = 0; i < s->dispatchers_n; i++)
		if (strlen(s->dispatchers[i].path) == len && !strncmp(s->dispatchers[i].path, path, len))
			return s->dispatchers[i].propagate;
	return true; /* undeclared dispatchers propagate, as LlamaIndex's default */
}

bool evr__src_dispatch_reaches(const struct evr_src *s, const char *from, const char *to)
{
	size_t tl = strlen(to), fl = strlen(from);

	if (tl == 0)
		return true; /* the root takes everything that propagates all the way */
	if (fl < tl || strncmp(from, to, tl) != 0 || (fl > tl && from[tl] != '.'))
		return false;
	/* Every dispatcher from `from` up to, not including, `to` must propagate. */
	for (size_t len = fl; len > tl;) {
		if (!propagates(s, from, len))
			return false;
		while (len > tl && from[len - 1] != '.')
			len--;
		len--; /* drop the dot */
	}
	return true;
}

#define PARAM_KEY_MAX 256u
#define PARAM_VALUE_MAX 4096u

/* An EVR_META_PARAM entry: [key, value], two str; the latest value of a key wins. */
static int read_param(struct evr_src *s, const msgpack_object *obj)
{
	const msgpack_object *a = obj->via.array.ptr;
	const msgpack_object_str *k, *v;
	char *key, *value;
	uint32_t i;

	if (obj->type != MSGPACK_OBJECT_ARRAY || obj->via.array.size != 2 || a[0].type != MSGPACK_OBJECT_STR ||
	    a[1].type != MSGPACK_OBJECT_STR)
		goto bad;
	k = &a[0].via.str;
	v = &a[1].via.str;
	if (k->size == 0 || k->size > PARAM_KEY_MAX || v->size > PARAM_VALUE_MAX || memchr(k->ptr, 0, k->size) ||
	    memchr(v->ptr, 0, v->size))
		goto bad;
	if (asprintf(&key, "app.%.*s", (int)k->size, k->ptr) < 0)
		return -ENOMEM;
	value = strndup(v->ptr, v->size);
	if (!value) {
		free(key);
		return -ENOMEM;
	}
	for (i = 0; i < s->app_n; i++)
		if (!strcmp(s->app[i].key, key))
			break;
	if (i < s->app_n) {
		free(key);
		if (!strcmp(s->app[i].value, value)) {
			free(value);
			return 0;
		}
		free((char *)s->app[i].value);
		s->app[i].value = value;
		s->app_gen++;
		return 0;
	}
	if (s->app_n == s->app_cap) {
		uint32_t cap = s->app_cap ? 2 * s->app_cap : 8;
		struct evr_param *t = realloc(s->app, cap * sizeof(*t));

		if (!t) {
			free(key);
			free(value);
			return -ENOMEM;
		}
		s->app = t;
		s->app_cap = cap;
	}
	s->app[s->app_n++] = (struct evr_param){ key, value };
	s->app_gen++;
	return 0;
bad:
	s->params_bad++;
	return -EBADMSG;
}

int evr__src_meta_apply(struct evr_src *s, uint32_t kind, uint64_t id, const msgpack_object *obj)
{
	if (kind == EVR_META_PARAM)
		return read_param(s, obj);
	/* A kind this consumer does not read, whatever its shape: skipped, not bad. */
	if (kind < EVR_META_PROCESS || kind > EVR_META_THREAD)
		return 0;
	if (obj->type != MSGPACK_OBJECT_MAP)
		return -EBADMSG;
	switch (kind) {
	case EVR_META_SITE:
		return read_site(s, id, obj);
	case EVR_META_DISPATCHER:
		return read_dispatcher(s, obj);
	case EVR_META_THREAD:
		return read_thread(s, obj);
	case EVR_META_PROCESS:
		read_process(s, obj);
		return 0;
	default:
		return 0; /* a kind this consumer does not know: ignored */
	}
}

/* Decodes a private copy of one entry and applies it. Returns 0, -EBADMSG or -ENOMEM. */
static int apply_view(struct evr_src *s, const struct evr_meta_view *v, msgpack_zone *zone)
{
	uint8_t *copy = malloc(v->len ? v->len : 1);
	msgpack_object obj;
	size_t off = 0;
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	/* A private copy: the producer could change the bytes while they are decoded. */
	memcpy(copy, v->payload, v->len);
	msgpack_zone_clear(zone);
	if (!evr__msgpack_sane(copy, v->len, 6) ||
	    !evr__unpacked(msgpack_unpack((const char *)copy, v->len, &off, zone, &obj)) ||
	    evr__src_meta_apply(s, v->kind, v->id, &obj) != 0)
		rc = -EBADMSG;
	free(copy);
	return rc;
}

int evr__src_meta_refresh(struct evr_src *s, struct evr_consumer_stats *st)
{
	struct evr_meta_view v;
	msgpack_zone zone;
	int n = 0, rc;

	if (!s->seg.hdr)
		return 0; /* a source read back from a capture: its metadata comes as entries */
	if (!msgpack_zone_init(&zone, 4096))
		return -ENOMEM;
	for (;;) {
		rc = evr_meta_next(&s->seg, &s->meta_cursor, &v, s->pub.dead);
		if (rc == -ESTALE) {
			st->bad++; /* an entry its writer never finished */
			continue;
		}
		if (rc <= 0)
			break;
		rc = apply_view(s, &v, &zone);
		if (rc == -ENOMEM)
			break;
		if (rc)
			st->bad++;
		n++;
	}
	msgpack_zone_destroy(&zone);
	if (rc == -EBADMSG)
		st->bad++;
	return rc < 0 && rc != -EBADMSG ? rc : n;
}

/*
 * A site a record names, read at its id (its offset) when the in-order scan
 * cannot reach it yet: another thread reserved an earlier entry and has not
 * published it, while this site's thread registered, published and emitted.
 * The scan reads it again later; the table keeps the first.
 */
static void site_read_ahead(struct evr_src *s, uint64_t id)
{
	struct evr_meta_view v;
	msgpack_zone zone;

	if (!s->seg.base || id < s->meta_cursor || evr_meta_read(&s->seg, id, &v) != 1 || v.kind != EVR_META_SITE)
		return;
	if (!msgpack_zone_init(&zone, 1024))
		return;
	apply_view(s, &v, &zone); /* a bad entry is counted when the scan reaches it */
	msgpack_zone_destroy(&zone);
}

void evr__src_tables_free(struct evr_src *s)
{
	for (uint32_t i = 0; i < s->sites_cap; i++)
		site_free(s->sites[i]);
	free(s->sites);
	for (uint32_t i = 0; i < s->dispatchers_n; i++)
		free(s->dispatchers[i].path);
	free(s->dispatchers);
	free(s->threads);
	for (uint32_t i = 0; i < s->app_n; i++) {
		free((char *)s->app[i].key);
		free((char *)s->app[i].value);
	}
	free(s->app);
	s->app = NULL;
	s->app_n = s->app_cap = 0;
	s->sites = NULL;
	s->dispatchers = NULL;
	s->threads = NULL;
	s->sites_cap = s->sites_n = s->dispatchers_n = s->threads_n = 0;
}

const struct evr_site_info *evr__src_site_find(struct evr_src *s, uint64_t id, struct evr_consumer_stats *st)
{
	const struct evr_site_info *si = evr__src_site(s, id);

	if (!si) {
		evr__src_meta_refresh(s, st);
		si = evr__src_site(s, id);
	}
	if (!si) {
		site_read_ahead(s, id);
		si = evr__src_site(s, id);
	}
	return si;
}

uint64_t evr__src_trace_id_high(uint64_t from_header, uint32_t pid, uint64_t start_real_ns)
{
	uint64_t h;

	if (from_header)
		return from_header;
	h = evr_mix64(start_real_ns ^ evr_mix64(pid));
	return h ? h : 1;
}
