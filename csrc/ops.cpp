// The vae_ext operator schemas, in one place, and the Python module stub that loads them.
// Kernels register per device in cpu/ and cuda/, autograd in autograd.cpp; fake kernels, the
// batching rules (vae_ext/_batching.py) and the pure-PyTorch fallback (vae_ext/reference.py,
// on devices without a kernel) register from vae_ext/_ops.py. How the pieces fit: README.md.
#include <torch/library.h>

#ifdef VAE_EXT_PYTHON_MODULE
#include <Python.h>
#endif

#ifndef VAE_EXT_CUDA_ARCH_LIST
#define VAE_EXT_CUDA_ARCH_LIST ""
#endif

TORCH_LIBRARY(vae_ext, m) {
  m.def("reparameterize(Tensor mu, Tensor logvar, Tensor eps) -> Tensor");
  m.def("reparameterize_sampled(Tensor mu, Tensor logvar, Tensor seed) -> Tensor");
  // d loss / d logvar of either reparameterize op; d loss / d mu is grad_z itself.
  m.def(
      "reparameterize_backward(Tensor grad_z, Tensor logvar, Tensor? eps, Tensor? seed) -> Tensor");
  // Per-sample KL, shape [B], float32 for half inputs (float64 for float64).
  m.def("gaussian_kl(Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar) -> Tensor");
  // Exactly one of eps and seed. Returns (z, kl).
  m.def(
      "reparameterize_kl(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, Tensor? prior_mu, "
      "Tensor? prior_logvar) -> (Tensor, Tensor)");
  // Backward of reparameterize_kl and of gaussian_kl (grad_z, eps and seed None). Returns
  // (grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar); the prior gradients have
  // mu's full shape when prior_grads is true and shape [0] otherwise.
  m.def(
      "reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor logvar, "
      "Tensor? eps, Tensor? seed, Tensor? prior_mu, Tensor? prior_logvar, bool prior_grads) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
}

#ifdef VAE_EXT_PYTHON_MODULE
// Importing vae_ext._C loads this library, whose static initialisers register the ops.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef VAE_EXT_WITH_CUDA
  PyModule_AddIntConstant(module, "with_cuda", 1);
#else
  PyModule_AddIntConstant(module, "with_cuda", 0);
#endif
  PyModule_AddStringConstant(module, "cuda_arch_list", VAE_EXT_CUDA_ARCH_LIST);
  return module;
}
#endif  // VAE_EXT_PYTHON_MODULE
