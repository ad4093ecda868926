// Host/device qualifiers so one functor serves the CPU and the CUDA kernels.
#pragma once
#if defined(__CUDACC__)
#define SF_HD __host__ __device__ __forceinline__
#else
#define SF_HD inline
#endif
