// Qualifiers shared by the host (C++) and device (CUDA) builds of the math headers.
// On the host the helpers are always inlined: the CPU kernels rely on that to vectorize
// their loops, and to get them compiled for each instruction set that target_clones builds
// (csrc/cpu/kernels_cpu.cpp).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define VAE_HD __host__ __device__ __forceinline__
#define VAE_HD_MEMBER __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define VAE_HD static inline __attribute__((always_inline))
#define VAE_HD_MEMBER inline __attribute__((always_inline))
#else
#define VAE_HD static inline
#define VAE_HD_MEMBER inline
#endif
