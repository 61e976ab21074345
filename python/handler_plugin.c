/*
 * handler_plugin.c: evring-python-handler.so, the handler plug-in behind
 * `evring attach ... -H python=module:Class[,isolate][:ARG]`: a handler
 * written in Python, run by the evring CLI, which does not link libpython.
 *
 * The CLI loads this object as `plugin=PATH:module:Class[:ARG]` (consumer.h,
 * EVR_HANDLER_ENTRY). Its entry point starts an embedded interpreter once
 * per process (Py_InitializeFromConfig, install_signal_handlers 0: the CLI
 * keeps its own signal handlers; a failure, such as a bad PYTHONHOME, is
 * an error line, not Py_FatalError's abort), puts the evring package's
 * directory and then the current directory on sys.path (an evring/ in the
 * current directory does not shadow the package), imports module, makes Class(ARG) (Class() without ARG), and
 * hands the object to the same bridge evring.Consumer uses: it imports
 * evring._evring and calls evr_py_handler_make through the capsule
 * evring._evring._handler_api, so one copy of the bridge and the record
 * types serves both. Then it releases the GIL for the handler threads.
 * The interpreter is never finalized: handler threads may still be inside
 * it when the process exits (the bridge flushes sys.stdout and sys.stderr
 * at each handler's end).
 *
 * The consumer dlopens a plug-in RTLD_LOCAL, which would hide libpython's
 * symbols from the extension modules the interpreter imports later (the
 * evring package's, _json, ...): libpython is promoted to RTLD_GLOBAL first.
 *
 * The evring package's directory: $EVRING_PYTHONPATH when set; else the
 * build tree's (EVR_PY_BUILD_DIR) when this object is the build tree's; else
 * the installed one, EVR_PY_INSTALL_REL from this object's directory
 * (LIBDIR/evring), so an install under any prefix finds its own package.
 * PYTHONPATH is honoured too.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evring/consumer.h>

#include "handler_bridge.h"

/* The package beside this object: the build tree's when it lies there, else the installed one relative to it. */
static const char *package_dir(void)
{
	static char path[4096];
	const char *env = getenv("EVRING_PYTHONPATH"), *slash;
	Dl_info info;

	if (env && *env)
		return env;
	if (!dladdr((void *)package_dir, &info) || !info.dli_fname)
		return EVR_PY_BUILD_DIR;
	if (!strncmp(info.dli_fname, EVR_PY_BUILD_PLUGIN_DIR "/", strlen(EVR_PY_BUILD_PLUGIN_DIR "/")))
		return EVR_PY_BUILD_DIR;
	slash = strrchr(info.dli_fname, '/');
	snprintf(path, sizeof(path), "%.*s/%s", slash ? (int)(slash - info.dli_fname) : 1,
		 slash ? info.dli_fname : ".", EVR_PY_INSTALL_REL);
	return path;
}

/* The current exception as "Type: message" into err, cleared. */
static void exc_text(char *err, size_t errlen, const char *what)
{
	PyObject *t, *v, *tb, *s = NULL;
	const char *msg = NULL;

	PyErr_Fetch(&t, &v, &tb);
	PyErr_NormalizeException(&t, &v, &tb);
	if (v && (s = PyObject_Str(v)) != NULL)
		msg = PyUnicode_AsUTF8(s);
	snprintf(err, errlen, "%s: %s%s%s", what, t ? ((PyTypeObject *)t)->tp_name : "error", msg && *msg ? ": " : "",
		 msg ? msg : "");
	PyErr_Clear();
	Py_XDECREF(s);
	Py_XDECREF(t);
	Py_XDECREF(v);
	Py_XDECREF(tb);
}

/* sys.argv, and sys.path: the package's directory first, the current directory next. */
static int setup_path(char *err, size_t errlen)
{
	PyObject *g = PyDict_New(), *r;
	static const char code[] = "import os, sys\n"
				   "if not getattr(sys, 'argv', None): sys.argv = ['evring']\n"
				   "here = os.getcwd()\n"
				   "if here not in sys.path: sys.path.insert(0, here)\n"
				   "if pkgdir in sys.path: sys.path.remove(pkgdir)\n"
				   "sys.path.insert(0, pkgdir)\n";

	if (!g || PyDict_SetItemString(g, "__builtins__", PyEval_GetBuiltins()) < 0) {
		Py_XDECREF(g);
		exc_text(err, errlen, "python handler");
		return -1;
	}
	{
		PyObject *dir = PyUnicode_DecodeFSDefault(package_dir());

		if (!dir || PyDict_SetItemString(g, "pkgdir", dir) < 0) {
			Py_XDECREF(dir);
			Py_DECREF(g);
			exc_text(err, errlen, "python handler");
			return -1;
		}
		Py_DECREF(dir);
	}
	r = PyRun_String(code, Py_file_input, g, g);
	Py_DECREF(g);
	if (!r) {
		exc_text(err, errlen, "python handler: setting sys.path");
		return -1;
	}
	Py_DECREF(r);
	return 0;
}

/* Imports module, makes Class(ARG), and has the bridge make *out; 0 or -EINVAL with err set. GIL held. */
static int make(const char *module, const char *cls, const char *arg, struct evr_handler *out, char *err,
		size_t errlen)
{
	const struct evr_py_handler_api *api;
	struct evr_py_handler_opts o = { 0 };
	PyObject *mod, *type, *obj;
	char what[600];
	int rc;

	snprintf(what, sizeof(what), "python handler %s:%s", module, cls);
	if (setup_path(err, errlen) < 0)
		return -EINVAL;
	if (!(mod = PyImport_ImportModule(module))) {
		exc_text(err, errlen, what);
		return -EINVAL;
	}
	type = PyObject_GetAttrString(mod, cls);
	Py_DECREF(mod);
	if (!type) {
		PyErr_Clear();
		snprintf(err, errlen, "%s: module %s has no %s", what, module, cls);
		return -EINVAL;
	}
	obj = arg ? PyObject_CallFunction(type, "s", arg) : PyObject_CallNoArgs(type);
	Py_DECREF(type);
	if (!obj) {
		exc_text(err, errlen, what);
		return -EINVAL;
	}
	api = PyCapsule_Import(EVR_PY_HANDLER_API_CAPSULE, 0);
	if (!api || api->version != EVR_PY_HANDLER_API_VERSION) {
		if (api)
			snprintf(err, errlen, "%s: evring._evring's handler API is version %d, this plug-in's %d", what,
				 api->version, EVR_PY_HANDLER_API_VERSION);
		else
			exc_text(err, errlen, "python handler: importing evring._evring");
		Py_DECREF(obj);
		return -EINVAL;
	}
	o.name = cls;
	rc = api->make(obj, &o, out, err, errlen);
	Py_DECREF(obj);
	if (rc < 0) {
		char why[1024];

		exc_text(why, sizeof(why), what);
		snprintf(err, errlen, "%s", why);
		return -EINVAL;
	}
	return 0;
}

EVR_HANDLER_EXPORT int evr_handler_entry_v1(const char *arg, struct evr_handler *out, char *err, size_t errlen);

/* ARG: "module:Class[:ARG]". */
EVR_HANDLER_EXPORT int evr_handler_entry_v1(const char *arg, struct evr_handler *out, char *err, size_t errlen)
{
	char module[256], cls[256];
	const char *c1, *c2;
	PyGILState_STATE st = PyGILState_UNLOCKED;
	int started = 0, rc;

	c1 = arg ? strchr(arg, ':') : NULL;
	if (!c1 || c1 == arg || !c1[1] || c1[1] == ':') {
		snprintf(err, errlen, "python handler: wants module:Class[:ARG], not '%s'", arg ? arg : "");
		return -EINVAL;
	}
	c2 = strchr(c1 + 1, ':');
	if ((size_t)(c1 - arg) >= sizeof(module) || (size_t)((c2 ? c2 : c1 + strlen(c1)) - (c1 + 1)) >= sizeof(cls)) {
		snprintf(err, errlen, "python handler: module or class name too long in '%s'", arg);
		return -EINVAL;
	}
	snprintf(module, sizeof(module), "%.*s", (int)(c1 - arg), arg);
	snprintf(cls, sizeof(cls), "%.*s", (int)((c2 ? c2 : c1 + strlen(c1)) - (c1 + 1)), c1 + 1);

	/*
	 * libpython's symbols for the extension modules imported from here on.
	 * The handle is leaked on purpose: it keeps libpython mapped (and
	 * global) after the consumer dlcloses this plug-in, while handler
	 * threads and the interpreter, never finalized, still use it.
	 */
	if (!dlopen(EVR_LIBPYTHON_SONAME, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL)) {
		snprintf(err, errlen, "python handler: cannot make %s global: %s", EVR_LIBPYTHON_SONAME, dlerror());
		return -ELIBBAD;
	}
	if (!Py_IsInitialized()) {
		PyConfig config;
		PyStatus status;

		PyConfig_InitPythonConfig(&config);
		config.install_signal_handlers = 0;
		config.parse_argv = 0;
		status = Py_InitializeFromConfig(&config);
		PyConfig_Clear(&config);
		if (PyStatus_Exception(status)) {
			snprintf(err, errlen, "python handler: cannot start the interpreter: %s%s%s (PYTHONHOME=%s)",
				 status.func ? status.func : "", status.func ? ": " : "",
				 status.err_msg ? status.err_msg : "error", getenv("PYTHONHOME") ? getenv("PYTHONHOME") : "unset");
			return -ELIBBAD;
		}
		started = 1; /* this thread holds the GIL */
	} else {
		st = PyGILState_Ensure();
	}
	rc = make(module, cls, c2 ? c2 + 1 : NULL, out, err, errlen);
	if (started)
		(void)PyEval_SaveThread(); /* the GIL to the handler threads, for good */
	else
		PyGILState_Release(st);
	return rc;
}
