/*
 * meta.c: the metadata entries a producer writes, each a msgpack map appended
 * to the segment's metadata area (evr_meta_append) and never changed after:
 *
 *   EVR_META_PROCESS     {pid, program, cmdline, start_real_ns, capture_content,
 *                         str_limit, content_limit, lanes, lane_bytes, version}
 *   EVR_META_SITE        {kind: "event"|"span_begin"|"span_end", name, dispatcher,
 *                         file, line, func, fields: [{name, type, content}]}
 *   EVR_META_THREAD      {tid, lane, shared, name}
 *   EVR_META_DISPATCHER  {path, propagate}
 *   EVR_META_PARAM       [key, value]   (evr_run_param: an array of two str)
 *
 * A site's id, which its records carry, is the id of its entry. Encoding uses
 * a buffer on the stack: registering a site allocates nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/evring.h>

#include "producer.h"

#define ENTRY_MAX 4096

static void key(msgpack_packer *pk, const char *k)
{
	msgpack_pack_str_with_body(pk, k, strlen(k));
}

static void str(msgpack_packer *pk, const char *k, const char *v)
{
	key(pk, k);
	if (v)
		msgpack_pack_str_with_body(pk, v, strnlen(v, 1024));
	else
		msgpack_pack_nil(pk);
}

static void u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	key(pk, k);
	msgpack_pack_uint64(pk, v);
}

static void boolean(msgpack_packer *pk, const char *k, bool v)
{
	key(pk, k);
	if (v)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

static int append(uint32_t kind, struct evr_mpbuf *b, uint64_t *id)
{
	if (b->overflow)
		return -EINVAL;
	return evr_meta_append(&evr__proc.seg, kind, b->p, (uint32_t)b->len, id);
}

const char *evr__field_type_name(uint8_t type);

const char *evr__field_type_name(uint8_t type)
{
	static const char *names[] = { "?", "i64", "u64", "f64", "bool", "str", "i32", "u32" };

	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

int evr__meta_site(const struct evr_site_def *def, uint64_t *id)
{
	static const char *kinds[] = { "?", "event", "span_begin", "span_end" };
	uint8_t mem[ENTRY_MAX];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;

	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_map(&pk, 7);
	str(&pk, "kind", kinds[def->kind <= EVR_SITE_SPAN_END ? def->kind : 0]);
	str(&pk, "name", def->name);
	str(&pk, "dispatcher", def->dispatcher);
	str(&pk, "file", def->file);
	u64(&pk, "line", def->line);
	str(&pk, "func", def->func);
	key(&pk, "fields");
	msgpack_pack_array(&pk, def->nfields);
	for (uint32_t i = 0; i < def->nfields; i++) {
		msgpack_pack_map(&pk, 3);
		str(&pk, "name", def->fields[i].name);
		str(&pk, "type", evr__field_type_name(def->fields[i].type));
		boolean(&pk, "content", def->fields[i].flags & EVR_FIELD_CONTENT);
	}
	return append(EVR_META_SITE, &b, id);
}

int evr__meta_process(void)
{
	uint8_t mem[ENTRY_MAX];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;
	char cmdline[512];
	ssize_t n = -1;
	int fd;

	/* NUL-separated arguments, shown with spaces. */
	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, cmdline, sizeof(cmdline) - 1);
		close(fd);
	}
	if (n < 0)
		n = 0;
	cmdline[n] = 0;
	for (ssize_t i = 0; n > 0 && i < n - 1; i++)
		if (!cmdline[i])
			cmdline[i] = ' ';

	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_map(&pk, 10);
	u64(&pk, "pid", evr__proc.pid);
	str(&pk, "program", program_invocation_short_name);
	str(&pk, "cmdline", cmdline);
	u64(&pk, "start_real_ns", evr__proc.seg.hdr->start_real_ns);
	boolean(&pk, "capture_content", evr__content);
	u64(&pk, "str_limit", EVR_STR_LIMIT);
	u64(&pk, "content_limit", EVR_CONTENT_LIMIT);
	u64(&pk, "lanes", evr__proc.seg.lane_count);
	u64(&pk, "lane_bytes", evr__proc.seg.lane_bytes);
	str(&pk, "version", "0.1.0");
	return append(EVR_META_PROCESS, &b, NULL);
}

int evr__meta_thread(const struct evr_writer *w)
{
	uint8_t mem[ENTRY_MAX];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;
	char name[32] = "";

	pthread_getname_np(pthread_self(), name, sizeof(name));
	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_map(&pk, 4);
	u64(&pk, "tid", (uint32_t)w->owner);
	u64(&pk, "lane", (uint64_t)(w->lane - evr__proc.seg.lanes));
	boolean(&pk, "shared", w->shared);
	str(&pk, "name", name);
	return append(EVR_META_THREAD, &b, NULL);
}

int evr__meta_dispatcher(const char *path, bool propagate)
{
	uint8_t mem[ENTRY_MAX];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;

	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_map(&pk, 2);
	str(&pk, "path", path);
	boolean(&pk, "propagate", propagate);
	return append(EVR_META_DISPATCHER, &b, NULL);
}

/* A dotted path of names made of letters, digits, '_' and '-'. */
static bool path_valid(const char *p)
{
	size_t n = p ? strlen(p) : 0;

	if (n == 0 || n > 255 || p[0] == '.' || p[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
			  c == '-' || (c == '.' && p[i + 1] != '.');
		if (!ok)
			return false;
	}
	return true;
}

int evr_dispatcher(const char *path, bool propagate)
{
	if (!path_valid(path))
		return -EINVAL;
	if (!evr__proc_ensure_open())
		return -ENODEV;
	return evr__meta_dispatcher(path, propagate);
}

/*
 * The run parameters given so far, the last of each key, in the order they
 * were last set, kept for the process's life: every segment it opens later
 * (evr_open again, a forked child's own) gets them, in order, after its
 * process entry. Under evr__proc.lock.
 */
struct param {
	struct param *next;
	uint32_t klen, vlen;
	char kv[]; /* key then value, not terminated */
};

static struct param *params, **params_tail = &params;

static int meta_param(const struct param *p)
{
	uint8_t mem[EVR_PARAM_KEY_MAX + EVR_PARAM_VALUE_MAX + 16];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;

	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_str_with_body(&pk, p->kv, p->klen);
	msgpack_pack_str_with_body(&pk, p->kv + p->klen, p->vlen);
	return append(EVR_META_PARAM, &b, NULL);
}

void evr__meta_params(void)
{
	for (const struct param *p = params; p; p = p->next)
		meta_param(p); /* a full area counts it in hdr.meta_dropped */
}

int evr_run_param(const char *key, const char *value)
{
	size_t klen, vlen;
	struct param *p;
	int rc = 0;

	if (!key || !value || !*key)
		return -EINVAL;
	klen = strnlen(key, EVR_PARAM_KEY_MAX + 1);
	vlen = strnlen(value, EVR_PARAM_VALUE_MAX + 1);
	if (klen > EVR_PARAM_KEY_MAX || vlen > EVR_PARAM_VALUE_MAX)
		return -E2BIG;
	if (!evr__proc_ensure_open())
		return -ENODEV;
	p = malloc(sizeof(*p) + klen + vlen);
	if (!p)
		return -ENOMEM;
	*p = (struct param){ NULL, (uint32_t)klen, (uint32_t)vlen };
	memcpy(p->kv, key, klen);
	memcpy(p->kv + klen, value, vlen);
	pthread_mutex_lock(&evr__proc.lock);
	/* One kept per key (the last): a key set in a loop does not grow what later segments are given. */
	for (struct param **q = &params; *q; q = &(*q)->next) {
		struct param *old = *q;

		if (old->klen == klen && memcmp(old->kv, key, klen) == 0) {
			*q = old->next;
			if (params_tail == &old->next)
				params_tail = q;
			free(old);
			break;
		}
	}
	*params_tail = p;
	params_tail = &p->next;
	if (evr_enabled()) /* evr_close may have run since ensure_open */
		rc = meta_param(p);
	pthread_mutex_unlock(&evr__proc.lock);
	return rc;
}
