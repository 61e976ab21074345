/*
 * A handler plug-in for test_hub: writes what it receives, one line each, to
 * the file named by its argument. Built twice: as evr_test_plugin, and with
 * EVR_TEST_PLUGIN_NO_ENTRY as a shared object whose only entry point is of
 * another (made-up) ABI version, which the consumer must refuse.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evring/consumer.h>

struct plug {
	FILE *f;
};

static int plug_event(void *ctx, const struct evr_event *ev)
{
	struct plug *p = ctx;

	fprintf(p->f, "event %s\n", ev->site ? ev->site->name : "?");
	return 0;
}

static void plug_close(void *ctx)
{
	struct plug *p = ctx;

	fprintf(p->f, "close\n");
	fflush(p->f);
}

static void plug_destroy(void *ctx)
{
	struct plug *p = ctx;

	fprintf(p->f, "destroy\n");
	fclose(p->f);
	free(p);
}

static const char *const plug_ignore_end[] = { "ignored", NULL };

/*
 * <evring/consumer.h> spends the entry point's C name on its typedef, so the
 * function takes another C name and an asm label gives it the symbol.
 */
#ifndef EVR_TEST_PLUGIN_NO_ENTRY
#define PLUG_SYMBOL EVR_HANDLER_ENTRY
#else
#define PLUG_SYMBOL "evr_handler_entry_v0"
#endif
__attribute__((visibility("default"))) int plug_entry(const char *arg, struct evr_handler *out, char *err,
						      size_t errlen) __asm__(PLUG_SYMBOL);

int plug_entry(const char *arg, struct evr_handler *out, char *err, size_t errlen)
{
	struct plug *p;

	if (!arg || !*arg) {
		snprintf(err, errlen, "needs an output file: plugin=PATH.so:FILE");
		return -EINVAL;
	}
	if (strcmp(arg, "fail") == 0) {
		snprintf(err, errlen, "refused: asked to fail");
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->f = fopen(arg, "w");
	if (!p->f) {
		snprintf(err, errlen, "%s: %s", arg, strerror(errno));
		free(p);
		return -errno;
	}
	fprintf(p->f, "arg %s\n", arg);
	out->name = "plug";
	out->ctx = p;
	out->on_event = plug_event;
	out->on_close = plug_close;
	out->destroy = plug_destroy;
	out->dispatcher = "app";
	out->ignore_end = plug_ignore_end;
	return 0;
}
