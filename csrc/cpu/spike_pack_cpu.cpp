// CPU pack / unpack of spike tensors (csrc/core/spike.h "Packed form"): one pass that bit-packs the
// non-zeros, counts them and classifies the values (binary / counts / other).
#include <algorithm>
#include <cstdint>

#include "core/spike.h"
#include "cpu/cpu_common.h"
#include "cpu/spike_events_cpu.h"

namespace spikeforge {
namespace {

using namespace cpu;

template <typename T>
void pack_impl(const TensorView& s, const TensorView& bits, const TensorView& info, int nthreads) {
  const int64_t R = s.shape[0], K = s.shape[1], nwords = spike_words(K);
  const T* sp = s.ptr<T>();
  int64_t* bp = bits.ptr<int64_t>();
  int64_t nnz = 0, kind = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : nnz) reduction(max : kind) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    const T* row = sp + r * K;
    for (int64_t w = 0; w < nwords; ++w) {
      const int64_t k0 = w * 64, n = std::min<int64_t>(64, K - k0);
      const uint64_t mask = nonzero_mask(row + k0, n);
      int64_t kmax = 0;
      const uint64_t full = n == 64 ? ~uint64_t(0) : ((uint64_t(1) << n) - 1);
      // the common case, all 0 / 1, costs two vector compares; only other chunks are classified
      if (binary_mask(row + k0, n) != full) {
        for (int64_t j = 0; j < n; ++j) {
        const T v = row[k0 + j];
        // 0 / 1: binary; integer in [0, 255]: counts; anything else (negative, fractional, NaN): other
        const int64_t c = (v == T(0) || v == T(1)) ? 0
                          : (v > T(0) && v <= T(kMaxSpikeCount) && v == static_cast<T>(static_cast<int64_t>(v))) ? 1
                                                                                                                 : 2;
        kmax = std::max(kmax, c);
        }
      }
      bp[r * nwords + w] = static_cast<int64_t>(mask);
      nnz += __builtin_popcountll(mask);
      kind = std::max(kind, kmax);
    }
  }
  info.ptr<int64_t>()[0] = nnz;
  info.ptr<int64_t>()[1] = kind;
}

template <typename T>
void unpack_impl(const TensorView& bits, const TensorView& out, int nthreads) {
  const int64_t R = out.shape[0], K = out.shape[1], nwords = spike_words(K);
  const int64_t* bp = bits.ptr<int64_t>();
  T* op = out.ptr<T>();
#pragma omp parallel for num_threads(nthreads) schedule(static) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      op[r * K + k] = static_cast<T>((static_cast<uint64_t>(bp[r * nwords + (k >> 6)]) >> (k & 63)) & 1u);
    }
  }
}

}  // namespace

void spike_pack_cpu(const TensorView& s, const TensorView& bits, const TensorView& info, const ExecConfig& ex) {
  check_spike_pack_args(s, bits, info);
  dispatch_f32_f64(s.dtype, "s", [&](auto t) { pack_impl<decltype(t)>(s, bits, info, threads_of(ex)); });
}

void spike_unpack_cpu(const TensorView& bits, const TensorView& out, const ExecConfig& ex) {
  check_spike_unpack_args(bits, out);
  dispatch_f32_f64(out.dtype, "out", [&](auto t) { unpack_impl<decltype(t)>(bits, out, threads_of(ex)); });
}

}  // namespace spikeforge
