// The Python module `dale_ext._C`. Importing it loads this shared library, whose static
// initialisers register the ops with the torch dispatcher (torch.ops.dale_ext.*). It stays thin:
// users call the Python wrappers in dale_ext.ops, never this module.
#include <pybind11/pybind11.h>

#include "cpu/microkernels.h"
#include "cpu/output_cache.h"

#ifndef DALE_EXT_CUDA_BUILT
#define DALE_EXT_CUDA_BUILT 0
#endif
#ifndef DALE_EXT_TORCH_CUDA
#define DALE_EXT_TORCH_CUDA ""
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "dale_ext compiled ops (registered under torch.ops.dale_ext)";
  m.def("cuda_built", [] { return static_cast<bool>(DALE_EXT_CUDA_BUILT); },
        "Whether the CUDA kernels were compiled into this build.");
  m.def("build_info", [] {
    pybind11::dict d;
    d["cuda_built"] = static_cast<bool>(DALE_EXT_CUDA_BUILT);
    d["torch_cuda"] = std::string(DALE_EXT_TORCH_CUDA);
    d["compiler"] = std::string(__VERSION__);
    // the CPU micro-kernel set this process uses (DALE_EXT_CPU_ISA caps it)
    d["cpu_kernels"] = std::string(dale_ext::cpu::microkernels_isa());
    return d;
  });
  m.def("output_cache_limit", &dale_ext::cpu::output_cache_limit);
  m.def("set_output_cache_limit", &dale_ext::cpu::set_output_cache_limit, pybind11::arg("bytes"));
  m.def("output_cache_bytes", &dale_ext::cpu::output_cache_bytes);
  m.def("empty_output_cache", &dale_ext::cpu::empty_output_cache);
}
