// Host/device qualifiers so one functor serves the CPU and the CUDA kernels.
#pragma once
#if defined(__CUDACC__)
#define SF_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined on the host too: the CPU kernels call the neuron dynamics per element inside loops the
// compiler must vectorise, and a call it chose not to inline (a step with several selects) kept its array
// arguments in memory and the whole loop scalar.
#define SF_HD inline __attribute__((always_inline))
#else
#define SF_HD inline
#endif
