"""Builds vae_ext._C: the C++ CPU kernels always, the CUDA kernels when they can be built.

Environment:
  VAE_EXT_NO_EXT=1    install the pure-Python package only (no compiler needed)
  VAE_EXT_NO_CUDA=1   build the CPU kernels only, even where CUDA is available
  FORCE_CUDA=1        build the CUDA kernels even without a visible GPU (needs nvcc)
  TORCH_CUDA_ARCH_LIST  GPU architectures, default DEFAULT_CUDA_ARCH_LIST below
  MAX_JOBS            parallel compile jobs
"""

import glob
import os
import shutil

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# The one default of the GPU architectures: CMakeLists.txt reads this line, and the scripts
# (.ci/, benchmarks/) leave TORCH_CUDA_ARCH_LIST unset to get it.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def env_flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def cuda_wanted(torch_cuda_version, cuda_home):
    if env_flag("VAE_EXT_NO_CUDA") or torch_cuda_version is None:
        return False
    return env_flag("FORCE_CUDA") or (cuda_home is not None and shutil.which("nvcc") is not None)


def extensions():
    if env_flag("VAE_EXT_NO_EXT"):
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    # The float arithmetic of csrc/philox.h and vae_math.h is specified op by op: no
    # contraction into FMA. No errno and no FP traps lets GCC vectorize the branch-free math
    # (sqrt, selects) without changing any result.
    cxx_flags = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fvisibility=hidden"]
    # at::parallel_for is header code: without OpenMP here it runs on one thread. The
    # libgomp torch already loaded is the one used at run time (same soname).
    cxx_flags.append("-fopenmp")
    link_flags = ["-fopenmp"]
    define_macros = [("VAE_EXT_PYTHON_MODULE", None)]
    with_cuda = cuda_wanted(torch.version.cuda, CUDA_HOME)
    if with_cuda:
        arch_list = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        define_macros += [
            ("VAE_EXT_WITH_CUDA", None),
            ("VAE_EXT_CUDA_ARCH_LIST", '"' + arch_list + '"'),
        ]
        nvcc_flags = ["-O3", "--fmad=false", "-Xptxas=-warn-spills", "-lineinfo"]
        ext = CUDAExtension(
            "vae_ext._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(
            "vae_ext._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
