/* The consumer half of evring._evring (see module.c). */
#include "pyevring.h"

int evr_py_consumer_init(PyObject *m)
{
	(void)m;
	return 0;
}
