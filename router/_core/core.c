/* The relay core (epoll thread): not built yet. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int core_module_init(PyObject *module) { (void)module; return 0; }
