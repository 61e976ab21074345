/* The halves of evring._evring (module.c wires them). */
#ifndef EVR_PYEVRING_H
#define EVR_PYEVRING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Adds the producer API (producer.c) to the module; 0, or -1 with an exception set. */
int evr_py_producer_init(PyObject *m);

/* Adds evring.Consumer and the handler bridge (consumer.c); 0, or -1 with an exception set. */
int evr_py_consumer_init(PyObject *m);

#endif
