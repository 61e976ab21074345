/*
 * handler_records.h: the read-only record objects Python handlers receive
 * (handler_records.c), private to the bridge.
 *
 * A record wraps the C object (struct evr_event, evr_span_rec, evr_trace,
 * evr_lost, evr_skipped) while the method it is passed to runs, and
 * converts an attribute the first time it is read. When the method
 * returns, evr_py_rec_release copies every attribute into the record if
 * anything still holds it (the C object is only lent for the call) and
 * forgets the C object.
 */
#ifndef EVR_PY_HANDLER_RECORDS_H
#define EVR_PY_HANDLER_RECORDS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum evr_py_rec_kind { EVR_PY_EVENT, EVR_PY_SPAN, EVR_PY_TRACE, EVR_PY_LOST, EVR_PY_SKIPPED, EVR_PY_NKINDS };

/*
 * A new record over c (borrowed for the call); NULL with an exception set.
 * GIL held. revoked points at the call's loan flag: while it is nonzero
 * the C object is gone (the consumer was closed while the handler was
 * stalled in this call) and the record no longer reads it. It must stay
 * valid until evr_py_rec_release (the bridge's handler struct holds it).
 */
PyObject *evr_py_rec_new(enum evr_py_rec_kind kind, const void *c, const int *revoked);

/*
 * Ends the loan: copies the record if it is still referenced (unless the
 * loan was revoked: then the attributes it had not read yet raise
 * RuntimeError), then drops the caller's reference. GIL held.
 */
void evr_py_rec_release(PyObject *rec);

/* Readies the types and adds them (and Truncated) to m; 0 or -1 with an exception. */
int evr_py_records_init(PyObject *m);

#endif /* EVR_PY_HANDLER_RECORDS_H */
