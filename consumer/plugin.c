/*
 * plugin.c: handler plug-ins. A plug-in is a shared object exporting
 * EVR_HANDLER_ENTRY ("evr_handler_entry_v1"), an evr_handler_entry_v1 that
 * fills a struct evr_handler from the argument string. The version is in the
 * symbol's name, so an object built for another handler ABI has no such
 * symbol and is refused before any of its code runs.
 *
 * The object must stay mapped while any of its code can run: the handler
 * returned here wraps the plug-in's, and its destroy calls the plug-in's
 * destroy and only then dlclose. The hub calls destroy last, on the
 * handler's own thread; a handler abandoned while stalled inside the plug-in
 * keeps it mapped, as nothing destroys it until that call returns.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "handlers.h"

struct plugin {
	void *dl;
	struct evr_handler in; /* as the entry point filled it */
	char name[64];	       /* when the plug-in gives none: the file's base name */
};

static int tr_event(void *ctx, const struct evr_event *ev)
{
	struct plugin *p = ctx;

	return p->in.on_event(p->in.ctx, ev);
}

static int tr_span_begin(void *ctx, const struct evr_span_rec *sp)
{
	struct plugin *p = ctx;

	return p->in.on_span_begin(p->in.ctx, sp);
}

static int tr_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct plugin *p = ctx;

	return p->in.on_span_end(p->in.ctx, sp);
}

static int tr_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct plugin *p = ctx;

	return p->in.on_trace_end(p->in.ctx, tr);
}

static int tr_lost(void *ctx, const struct evr_lost *l)
{
	struct plugin *p = ctx;

	return p->in.on_lost(p->in.ctx, l);
}

static int tr_skipped(void *ctx, const struct evr_skipped *sk)
{
	struct plugin *p = ctx;

	return p->in.on_skipped(p->in.ctx, sk);
}

static void tr_close(void *ctx)
{
	struct plugin *p = ctx;

	p->in.on_close(p->in.ctx);
}

static int tr_end(void *ctx)
{
	struct plugin *p = ctx;

	return p->in.on_end(p->in.ctx);
}

static void tr_stats(void *ctx, struct evr_handler_stats *st)
{
	struct plugin *p = ctx;

	p->in.stats(p->in.ctx, st);
}

static void tr_destroy(void *ctx)
{
	struct plugin *p = ctx;

	if (p->in.destroy)
		p->in.destroy(p->in.ctx);
	dlclose(p->dl); /* last: nothing of the plug-in runs after this */
	free(p);
}

/*
 * The length of the path in "PATH.so[,OPTION][:ARG]": up to a ':' or ','
 * that follows ".so" (or ".so.1.2"), so an argument may hold colons and
 * slashes; without ".so" the first ':' or ',' ends the path.
 */
size_t evr__plugin_path_len(const char *spec)
{
	size_t end = strcspn(spec, ":,");

	for (const char *p = strstr(spec, ".so"); p; p = strstr(p + 1, ".so")) {
		const char *q = p + 3;

		while (q[0] == '.' && isdigit((unsigned char)q[1]))
			for (q++; isdigit((unsigned char)*q); q++)
				;
		if (*q == ':' || *q == ',' || *q == 0)
			return (size_t)(q - spec);
	}
	return end;
}

/* The base name of path without its ".so...", for a plug-in that names no handler. */
static void default_name(char *out, size_t n, const char *path)
{
	const char *base = strrchr(path, '/');
	size_t len;

	base = base ? base + 1 : path;
	len = strcspn(base, ".");
	if (len == 0)
		len = strlen(base);
	snprintf(out, n, "%.*s", (int)len, base);
}

/*
 * Loads "PATH.so[:ARG]" (dlopen RTLD_NOW | RTLD_LOCAL; a PATH without '/'
 * is taken from the current directory when a file of that name is there,
 * else searched as dlopen searches: the library path) and fills *h through its
 * EVR_HANDLER_ENTRY, called with ARG (NULL when there is none). The strings
 * in *h belong to the plug-in; evr__hub_add copies them. A caller that does
 * not hand *h to evr__hub_add must call h->destroy(h->ctx), which also
 * unloads the object. Returns 0, or with err set: -EINVAL (empty spec),
 * -ENOENT (no such file), -ELIBBAD (dlopen refused it: dlerror's text),
 * -ENOEXEC (no entry point: not a plug-in, or another ABI), -ENOMEM, or the
 * entry point's own failure (its message; -EINVAL if it returned > 0).
 */
int evr__plugin_handler(const char *spec, struct evr_handler *h, char *err, size_t errlen)
{
	char perr[256] = "", *path;
	evr_handler_entry_v1_fn entry;
	struct plugin *p;
	const char *arg;
	size_t n;
	int rc;

	memset(h, 0, sizeof(*h));
	n = spec ? evr__plugin_path_len(spec) : 0;
	if (!n) {
		snprintf(err, errlen, "plugin: no shared object given (plugin=PATH.so[:ARG])");
		return -EINVAL;
	}
	if (spec[n] == ',') {
		snprintf(err, errlen, "plugin %s: options (,isolate) are taken by evr_consumer_add_builtin", spec);
		return -EINVAL;
	}
	arg = spec[n] == ':' ? spec + n + 1 : NULL;
	path = strndup(spec, n);
	p = calloc(1, sizeof(*p));
	if (!path || !p) {
		snprintf(err, errlen, "plugin %s: out of memory", spec);
		rc = -ENOMEM;
		goto fail;
	}
	if (!strchr(path, '/') && access(path, F_OK) == 0) {
		char *here = malloc(n + 3);
		if (here) {
			snprintf(here, n + 3, "./%s", path);
			free(path);
			path = here;
		}
	}
	p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!p->dl) {
		const char *why = dlerror();

		rc = !strchr(path, '/') || access(path, F_OK) != 0 ? -ENOENT : -ELIBBAD;
		snprintf(err, errlen, "cannot load handler plug-in %s: %s", path, why ? why : "dlopen failed");
		goto fail;
	}
	dlerror();
	entry = (evr_handler_entry_v1_fn)dlsym(p->dl, EVR_HANDLER_ENTRY);
	if (!entry) {
		snprintf(err, errlen,
			 "%s has no %s(): not an evring handler plug-in, or built for another ABI "
			 "(this consumer takes handler ABI %d)",
			 path, EVR_HANDLER_ENTRY, EVR_HANDLER_ABI);
		rc = -ENOEXEC;
		goto fail;
	}
	rc = entry(arg, &p->in, perr, sizeof(perr));
	if (rc) {
		snprintf(err, errlen, "handler plug-in %s failed to start: %s", path,
			 perr[0] ? perr : rc < 0 ? strerror(-rc) : "it returned an error");
		rc = rc < 0 ? rc : -EINVAL;
		goto fail;
	}
	default_name(p->name, sizeof(p->name), path);
	*h = p->in;
	h->name = p->in.name && *p->in.name ? p->in.name : p->name;
	h->ctx = p;
	h->on_event = p->in.on_event ? tr_event : NULL;
	h->on_span_begin = p->in.on_span_begin ? tr_span_begin : NULL;
	h->on_span_end = p->in.on_span_end ? tr_span_end : NULL;
	h->on_trace_end = p->in.on_trace_end ? tr_trace_end : NULL;
	h->on_lost = p->in.on_lost ? tr_lost : NULL;
	h->on_skipped = p->in.on_skipped ? tr_skipped : NULL;
	h->on_close = p->in.on_close ? tr_close : NULL;
	h->on_end = p->in.on_end ? tr_end : NULL; /* every callback of ctx goes through the plug-in's own ctx */
	h->stats = p->in.stats ? tr_stats : NULL;
	h->destroy = tr_destroy; /* always: it unloads the object */
	free(path);
	return 0;
fail:
	if (p && p->dl)
		dlclose(p->dl);
	free(p);
	free(path);
	return rc;
}

