// Shared by the CUDA kernels of the spike-propagation family (csrc/core/spike.h; spike_pack_cuda.cu,
// spike_linear_cuda.cu, spike_conv2d_cuda.cu): block shape, reading a packed bit, the active-index
// compaction (the device-side counterpart of cpu/spike_events_cpu.h) and a tiled transpose.
//
// No host synchronisation anywhere (the ops are capturable in a CUDA graph): the number of active
// inputs is only ever known on the device, and every kernel is sized for the worst case and loops
// over the device-side counts. float32 only, launched on ex.stream.
//
// Everything here has internal linkage (an anonymous namespace): each .cu file compiles its own copy
// of the kernels (no relocatable device code).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/spike.h"
#include "cuda/cuda_common.cuh"

namespace spikeforge {
namespace {

using cuda_detail::check_cuda;
using cuda_detail::check_launch;
using cuda_detail::DeviceGuard;

constexpr int kBlock = 256;
constexpr int kWarps = kBlock / 32;
constexpr int kPerThread = 4;               // output features per thread
constexpr int kCols = kBlock * kPerThread;  // output features per block
constexpr int kChunk = 4096;                // inputs compacted per round (shared memory list)
constexpr int kPieces = kChunk / 32;        // 32-element pieces per round

// Bit k of a packed row (csrc/core/spike.h "Packed form"), as 0 / 1.
__device__ __forceinline__ unsigned spike_bit(const int64_t* row, int64_t k) {
  return static_cast<unsigned>((static_cast<uint64_t>(row[k >> 6]) >> (k & 63)) & 1u);
}

// Element k of a packed row as a value: 0, 1, or -1 where the sign row (or null) has the bit set.
__device__ __forceinline__ float spike_value(const int64_t* row, const int64_t* sign_row, int64_t k) {
  if (!spike_bit(row, k)) return 0.0f;
  return sign_row && spike_bit(sign_row, k) ? -1.0f : 1.0f;
}

// The NaN the fix-up kernels write (one bit pattern: threads that write the same element agree).
__device__ __forceinline__ float spike_nan() {
  return __int_as_float(0x7fc00000);
}

// out[z][c, r] = in[z][r, c] for batch z of in [batch, rows, cols]; 32 x 32 tiles through shared memory
// (padded: no bank conflicts). Row tiles are strided over grid.y (its 65535 limit). With nonfinite, a warp
// that read an inf or NaN sets *nonfinite to 1 (one atomic per such warp, none on finite data).
__global__ void transpose_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t rows, int64_t cols,
                                 unsigned long long* __restrict__ nonfinite) {
  __shared__ float tile[32][33];
  const int64_t z = blockIdx.z;
  in += z * rows * cols;
  out += z * rows * cols;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32;
  bool bad = false;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * 32; r0 < rows; r0 += static_cast<int64_t>(gridDim.y) * 32) {
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
      const int64_t r = r0 + i, c = c0 + threadIdx.x;
      if (r < rows && c < cols) {
        const float v = in[r * cols + c];
        tile[i][threadIdx.x] = v;
        bad |= !isfinite(v);
      }
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
      const int64_t c = c0 + i, r = r0 + threadIdx.x;
      if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][i];
    }
    __syncthreads();  // the tile is refilled for the next row tile
  }
  // blocks are 32 x 8: a warp is one threadIdx.y row, and every thread reaches this point
  if (nonfinite && __any_sync(0xffffffffu, bad) && threadIdx.x == 0) atomicOr(nonfinite, 1ull);
}

// nonfinite: see transpose_kernel (nullptr: no check).
inline void transpose(const float* in, float* out, int64_t rows, int64_t cols, cudaStream_t stream, int64_t batch = 1,
                      unsigned long long* nonfinite = nullptr) {
  if (rows == 0 || cols == 0 || batch == 0) return;
  SF_CHECK_ARG((cols + 31) / 32 <= 0x7fffffff, "spike kernels: a transposed matrix has too many columns");
  constexpr int64_t kMaxYZ = 65535;  // grid.y / grid.z limits: row tiles strided, batches in several launches
  const int64_t row_tiles = (rows + 31) / 32;
  for (int64_t z0 = 0; z0 < batch; z0 += kMaxYZ) {
    const int64_t nz = batch - z0 < kMaxYZ ? batch - z0 : kMaxYZ;
    const dim3 grid(static_cast<unsigned>((cols + 31) / 32),
                    static_cast<unsigned>(row_tiles < kMaxYZ ? row_tiles : kMaxYZ), static_cast<unsigned>(nz));
    transpose_kernel<<<grid, dim3(32, 8), 0, stream>>>(in + z0 * rows * cols, out + z0 * rows * cols, rows, cols,
                                                       nonfinite);
    check_launch("spike transpose_kernel");
  }
}

// Element e (< n) of a compaction source: a dense row with stride, or bit (col) of packed rows (with their
// sign rows for ternary input).
struct Source {
  const float* vals = nullptr;  // values: vals[e * stride]
  int64_t stride = 1;
  const int64_t* bits = nullptr;   // packed: bit `col` of row e (words per row: nwords)
  const int64_t* signs = nullptr;  // null, or the sign rows of bits (same layout)
  int64_t nwords = 0, col = 0;
  __device__ __forceinline__ float get(int64_t e) const {
    if (bits) return spike_value(bits + e * nwords, signs ? signs + e * nwords : nullptr, col);
    return vals[e * stride];
  }
};

// Compacts the non-zeros of src elements [e0, e0 + n), n <= kChunk, into idx/val (shared memory) in
// increasing order; returns their count (the same in every thread). Prefix sums over 32-element pieces.
// Src: anything with `float get(int64_t e) const` (Source, ConvPlane).
template <class Src>
__device__ int compact(const Src& src, int64_t e0, int n, int* idx, float* val, int* piece_off) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int npieces = (n + 31) / 32;
  // pass 1: counts per piece
  for (int pc = warp; pc < npieces; pc += kWarps) {
    const int e = pc * 32 + lane;
    const float v = e < n ? src.get(e0 + e) : 0.0f;
    const unsigned b = __ballot_sync(0xffffffffu, v != 0.0f);
    if (lane == 0) piece_off[pc] = __popc(b);
  }
  __syncthreads();
  // exclusive scan of the piece counts by warp 0 (kPieces = 128: 4 per lane, then a shuffle scan)
  if (warp == 0) {
    int c[kPieces / 32], sum = 0;
#pragma unroll
    for (int j = 0; j < kPieces / 32; ++j) {
      const int pc = lane * (kPieces / 32) + j;
      c[j] = pc < npieces ? piece_off[pc] : 0;
      sum += c[j];
    }
    int incl = sum;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += t;
    }
    int run = incl - sum;
#pragma unroll
    for (int j = 0; j < kPieces / 32; ++j) {
      const int pc = lane * (kPieces / 32) + j;
      if (pc < npieces) piece_off[pc] = run;
      run += c[j];
    }
    if (lane == 31) piece_off[kPieces] = incl;
  }
  __syncthreads();
  // pass 2: write the active entries
  for (int pc = warp; pc < npieces; pc += kWarps) {
    const int e = pc * 32 + lane;
    const float v = e < n ? src.get(e0 + e) : 0.0f;
    const unsigned b = __ballot_sync(0xffffffffu, v != 0.0f);
    if (v != 0.0f) {
      const int at = piece_off[pc] + __popc(b & ((1u << lane) - 1u));
      idx[at] = e;
      val[at] = v;
    }
  }
  __syncthreads();
  const int count = piece_off[kPieces];
  return count;
}

inline unsigned grid_1d(int64_t n, int device) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t cap = static_cast<int64_t>(cuda_detail::sm_count(device)) * 8;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

inline void require_all_cuda(std::initializer_list<const TensorView*> ts, const char* fn) {
  for (const TensorView* t : ts)
    if (t) SF_CHECK_ARG(t->device == DeviceKind::cuda, std::string("all tensors must be CUDA tensors for ") + fn);
}

}  // namespace
}  // namespace spikeforge
