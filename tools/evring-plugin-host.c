/*
 * evring-plugin-host: runs one handler plug-in for a consumer that asked for
 * it isolated (-H plugin=PATH.so,isolate[:ARG]), in a process of its own, so
 * that a plug-in that crashes takes only this process down. The consumer
 * starts it with the plug-in's "PATH.so[:ARG]" as its argument and its end of
 * a socketpair as fd 3 (consumer/plugin_wire.h); it is not meant to be run by
 * hand. Exit status: 0 at the end of the stream, 1 when the plug-in could not
 * be loaded (the consumer reports why), 2 on a malformed call.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "plugin_wire.h"

int main(int argc, char **argv)
{
	if (argc != 2 || fcntl(EVR_WIRE_HOST_FD, F_GETFD) < 0) {
		fprintf(stderr,
			"usage: evring-plugin-host PATH.so[:ARG] (with a socket as fd 3)\n"
			"  runs a handler plug-in for evring attach -H plugin=PATH.so,isolate; not run by hand\n");
		return 64;
	}
	return evr__plugin_host_run(EVR_WIRE_HOST_FD, argv[1]);
}
