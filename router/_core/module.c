/* router._core: the compiled relay core's Python face.
 *
 * Scanner and CounterTable expose the pure C parts (scan.c, quota.c) so that tests hold them
 * to the Python reference (router/frames.py, router/throttle.py); Core (core.c) is the relay.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "quota.h"
#include "scan.h"

int core_module_init(PyObject *module); /* core.c */

/* ---- Scanner ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD ws_scan s;
    PyObject *admit;       /* callable(opcode) -> bool, or NULL: not gated */
    PyObject *err_type, *err_value, *err_tb; /* what the callable raised during feed() */
} ScannerObject;

static int scanner_admit(void *ctx, int opcode) {
    ScannerObject *self = ctx;
    if (self->err_type)
        return 0;
    PyObject *r = PyObject_CallFunction(self->admit, "i", opcode);
    if (!r) {
        PyErr_Fetch(&self->err_type, &self->err_value, &self->err_tb);
        return 0;
    }
    int ok = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (ok < 0) {
        PyErr_Fetch(&self->err_type, &self->err_value, &self->err_tb);
        return 0;
    }
    return ok;
}

static int Scanner_init(ScannerObject *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"masked", "max_message", "allow_rsv", "admit", NULL};
    int masked, allow_rsv = 0;
    unsigned long long max_message = 1024 * 1024;
    PyObject *admit = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "p|KpO", kw, &masked, &max_message, &allow_rsv,
                                     &admit))
        return -1;
    Py_CLEAR(self->admit);
    if (admit != Py_None) {
        if (!PyCallable_Check(admit)) {
            PyErr_SetString(PyExc_TypeError, "admit must be callable or None");
            return -1;
        }
        self->admit = Py_NewRef(admit);
    }
    ws_scan_init(&self->s, masked, max_message, allow_rsv, self->admit != NULL, scanner_admit,
                 self);
    return 0;
}

static void Scanner_dealloc(ScannerObject *self) {
    Py_CLEAR(self->admit);
    Py_CLEAR(self->err_type);
    Py_CLEAR(self->err_value);
    Py_CLEAR(self->err_tb);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *raise_admit_error(ScannerObject *self) {
    PyErr_Restore(self->err_type, self->err_value, self->err_tb);
    self->err_type = self->err_value = self->err_tb = NULL;
    return NULL;
}

static PyObject *Scanner_feed(ScannerObject *self, PyObject *arg) {
    Py_buffer view;
    if (self->s.err_code) {
        PyErr_SetString(PyExc_ValueError, "the scanner stopped at a framing error");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, view.len + WS_HEADROOM);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    size_t w = ws_scan_feed(&self->s, view.buf, (size_t)view.len, (uint8_t *)PyBytes_AS_STRING(out));
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&out, (Py_ssize_t)w) < 0)
        return NULL;
    if (self->err_type) {
        Py_DECREF(out);
        return raise_admit_error(self);
    }
    return out;
}

static PyObject *Scanner_feed_to_boundary(ScannerObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    long used = ws_scan_to_boundary(&self->s, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (self->err_type)
        return raise_admit_error(self);
    return PyLong_FromLong(used);
}

static PyObject *Scanner_get_error(ScannerObject *self, void *closure) {
    if (!self->s.err_code)
        Py_RETURN_NONE;
    return Py_BuildValue("(isl)", self->s.err_code, self->s.err_msg, self->s.err_offset);
}

static PyObject *Scanner_get_close_code(ScannerObject *self, void *closure) {
    if (self->s.close_code < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->s.close_code);
}

static PyObject *Scanner_get_close_reason(ScannerObject *self, void *closure) {
    return PyUnicode_DecodeUTF8((const char *)self->s.close_reason, self->s.close_reason_len,
                                "replace");
}

#define U64_GETTER(field)                                                                          \
    static PyObject *Scanner_get_##field(ScannerObject *self, void *closure) {                   \
        return PyLong_FromUnsignedLongLong(self->s.field);                                         \
    }
#define BOOL_GETTER(name, expr)                                                                    \
    static PyObject *Scanner_get_##name(ScannerObject *self, void *closure) {                    \
        return PyBool_FromLong(expr);                                                              \
    }
U64_GETTER(bytes)
U64_GETTER(frames)
U64_GETTER(messages)
U64_GETTER(dropped)
U64_GETTER(close_seq)
BOOL_GETTER(dropping, self->s.dropping)
BOOL_GETTER(close_seen, self->s.close_seen)
BOOL_GETTER(fed_at_boundary, self->s.fed_at_boundary)
BOOL_GETTER(at_boundary, ws_scan_at_boundary(&self->s))
BOOL_GETTER(out_at_boundary, ws_scan_out_at_boundary(&self->s))
BOOL_GETTER(masked, self->s.masked)

#define GET(name) {#name, (getter)Scanner_get_##name, NULL, NULL, NULL}
static PyGetSetDef Scanner_getset[] = {
    GET(bytes),           GET(frames),      GET(messages),        GET(dropped),
    GET(close_seq),       GET(dropping),    GET(close_seen),      GET(fed_at_boundary),
    GET(at_boundary),     GET(out_at_boundary), GET(masked),      GET(error),
    GET(close_code),      GET(close_reason), {NULL}};

static PyMethodDef Scanner_methods[] = {
    {"feed", (PyCFunction)Scanner_feed, METH_O,
     "Scan the next bytes; return the part to forward (see router.frames.FrameScanner.feed). "
     "On a framing error, returns what precedes the bad frame and sets .error."},
    {"feed_to_boundary", (PyCFunction)Scanner_feed_to_boundary, METH_O,
     "Scan only what finishes the forwarded frame; return that count (-1: framing error)."},
    {NULL}};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "router._core.Scanner",
    .tp_basicsize = sizeof(ScannerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C frame scanner of one direction (scan.c), for tests and tools.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

/* ---- CounterTable (quota.c, for tests) --------------------------------------------------- */

typedef struct {
    PyObject_HEAD wq_table t;
    PyObject *held; /* dict: id -> (key, capsule) of counters handed out */
} CounterTableObject;

static int CounterTable_init(CounterTableObject *self, PyObject *args, PyObject *kwds) {
    if (!PyArg_ParseTuple(args, ""))
        return -1;
    if (self->t.slots)
        return 0;
    if (wq_table_init(&self->t) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void CounterTable_dealloc(CounterTableObject *self) {
    if (self->t.slots)
        wq_table_free(&self->t);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *CounterTable_acquire(CounterTableObject *self, PyObject *args) {
    const char *key;
    long long limit;
    double window, now;
    if (!PyArg_ParseTuple(args, "sLdd", &key, &limit, &window, &now))
        return NULL;
    wq_counter *c = wq_acquire(&self->t, key, limit, window, now);
    if (!c) {
        PyErr_SetString(PyExc_ValueError, "a quota needs limit >= 1 and window > 0");
        return NULL;
    }
    return PyLong_FromVoidPtr(c);
}

static PyObject *CounterTable_release(CounterTableObject *self, PyObject *args) {
    const char *key;
    PyObject *handle;
    double now;
    if (!PyArg_ParseTuple(args, "sOd", &key, &handle, &now))
        return NULL;
    void *c = PyLong_AsVoidPtr(handle);
    if (!c)
        return NULL;
    wq_release(&self->t, key, c, now);
    Py_RETURN_NONE;
}

static PyObject *CounterTable_admit(CounterTableObject *self, PyObject *args) {
    PyObject *handles;
    double now;
    if (!PyArg_ParseTuple(args, "O!d", &PyTuple_Type, &handles, &now))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(handles);
    if (n > 16) {
        PyErr_SetString(PyExc_ValueError, "at most 16 counters");
        return NULL;
    }
    wq_counter *cs[16];
    for (Py_ssize_t i = 0; i < n; i++) {
        cs[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(handles, i));
        if (!cs[i])
            return NULL;
    }
    return PyLong_FromLong(wq_admit(cs, (int)n, now));
}

static PyObject *CounterTable_sweep(CounterTableObject *self, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    wq_sweep(&self->t, now);
    Py_RETURN_NONE;
}

static Py_ssize_t CounterTable_len(CounterTableObject *self) { return (Py_ssize_t)self->t.count; }

static PyMethodDef CounterTable_methods[] = {
    {"acquire", (PyCFunction)CounterTable_acquire, METH_VARARGS,
     "acquire(key, limit, window, now) -> handle of the key's counter (held until release)."},
    {"release", (PyCFunction)CounterTable_release, METH_VARARGS,
     "release(key, handle, now): the connection holding handle ended."},
    {"admit", (PyCFunction)CounterTable_admit, METH_VARARGS,
     "admit(handles, now) -> -1 when the message passes (counted), else the first full one."},
    {"sweep", (PyCFunction)CounterTable_sweep, METH_O, "Forget unused idle counters."},
    {NULL}};

static PySequenceMethods CounterTable_seq = {.sq_length = (lenfunc)CounterTable_len};

static PyTypeObject CounterTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "router._core.CounterTable",
    .tp_basicsize = sizeof(CounterTableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C quota counter table (quota.c), for tests: handles are raw pointers, "
              "valid until released.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)CounterTable_init,
    .tp_dealloc = (destructor)CounterTable_dealloc,
    .tp_methods = CounterTable_methods,
    .tp_as_sequence = &CounterTable_seq,
};

/* ---- module ------------------------------------------------------------------------------ */

static int exec_module(PyObject *m) {
    if (PyType_Ready(&ScannerType) < 0 || PyType_Ready(&CounterTableType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0 ||
        PyModule_AddObjectRef(m, "CounterTable", (PyObject *)&CounterTableType) < 0 ||
        PyModule_AddIntConstant(m, "EXACT_LIMIT", WQ_EXACT_LIMIT) < 0)
        return -1;
    return core_module_init(m);
}

static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, .m_name = "router._core",
    .m_doc = "The compiled relay core of the router (frame scan, quotas, epoll relay).",
    .m_size = 0, .m_slots = slots};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&moduledef); }
