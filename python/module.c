/*
 * evring._evring: the extension module the `evring` package wraps.
 *
 * One module, two halves with an init each: producer.c (events, spans, the
 * LLM vocabulary, run params: the same segment, records and sites as C) and
 * consumer.c (evring.Consumer and handlers written in Python). Written against
 * Python's public C API (Python.h, no internal headers).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pyevring.h"

static struct PyModuleDef evr_py_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "evring._evring",
	.m_doc = "evring's C core: the producer API and the consumer (see the evring package).",
	.m_size = -1,
};

PyMODINIT_FUNC PyInit__evring(void);

PyMODINIT_FUNC PyInit__evring(void)
{
	PyObject *m = PyModule_Create(&evr_py_module);

	if (m == NULL)
		return NULL;
	if (evr_py_producer_init(m) < 0 || evr_py_consumer_init(m) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
