// Qualifiers shared by the host (C++) and device (CUDA) builds of the math headers.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define VAE_HD __host__ __device__ __forceinline__
#else
#define VAE_HD inline
#endif
