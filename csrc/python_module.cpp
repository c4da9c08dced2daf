// Makes the extension importable as `torchrl_reward._C`. The module itself is
// empty: importing it runs the TORCH_LIBRARY registrations of csrc/ops, which
// expose the ops as torch.ops.torchrl_reward.*. Only setup.py builds this file;
// the CMake library needs no Python.

#include <Python.h>

extern "C" {

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "Registers the torchrl_reward C++/CUDA ops with the torch dispatcher.",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}

} // extern "C"
