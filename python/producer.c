/* The producer half of evring._evring (see module.c). */
#include "pyevring.h"

int evr_py_producer_init(PyObject *m)
{
	(void)m;
	return 0;
}
