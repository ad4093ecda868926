// Kernel body (cpu/isa_variants_cpu.h: compiled once per instruction-set variant; spike_pack_cpu.cpp
// checks the arguments and calls a variant's entry points at the end of this file): pack / unpack of
// spike tensors (csrc/core/spike.h "Packed form"), one pass that bit-packs the non-zeros (and, when asked,
// the signs), counts them and classifies the values (kSpike* classes).
#include "cpu/spike_events_cpu.h"

template <typename T>
void pack_impl(const TensorView& s, const TensorView& bits, const TensorView& info, const TensorView* signs,
               int nthreads) {
  const int64_t R = s.shape[0], K = s.shape[1], nwords = spike_words(K);
  const T* sp = s.ptr<T>();
  int64_t* bp = bits.ptr<int64_t>();
  int64_t* sgp = signs ? signs->ptr<int64_t>() : nullptr;
  int64_t nnz = 0, classes = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : nnz) reduction(| : classes) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    const T* row = sp + r * K;
    for (int64_t w = 0; w < nwords; ++w) {
      const T* chunk = row + w * 64;
      const int64_t n = std::min<int64_t>(64, K - w * 64);
      const uint64_t mask = nonzero_mask(chunk, n);
      const uint64_t full = n == 64 ? ~uint64_t(0) : ((uint64_t(1) << n) - 1);
      uint64_t neg = 0;
      // The common cases cost a few vector compares: all 0 / 1 (binary), all 0 / 1 / -1 (ternary); only other
      // chunks (counts, floats) are classified value by value.
      if (binary_mask(chunk, n) != full) {
        neg = negative_mask(chunk, n);
        if (ternary_mask(chunk, n) == full) {
          classes |= neg ? kSpikeNegOne : 0;
        } else {
          int64_t c = 0;
          for (int64_t j = 0; j < n; ++j) c |= spike_value_class(chunk[j]);
          classes |= c;
        }
      }
      bp[r * nwords + w] = static_cast<int64_t>(mask);
      if (sgp) sgp[r * nwords + w] = static_cast<int64_t>(neg);
      nnz += __builtin_popcountll(mask);
    }
  }
  info.ptr<int64_t>()[0] = nnz;
  info.ptr<int64_t>()[1] = classes;
}

template <typename T>
void unpack_impl(const TensorView& bits, const TensorView* signs, const TensorView& out, int nthreads) {
  const int64_t R = out.shape[0], K = out.shape[1], nwords = spike_words(K);
  const int64_t* bp = bits.ptr<int64_t>();
  const int64_t* sgp = signs ? signs->ptr<int64_t>() : nullptr;
  T* op = out.ptr<T>();
#pragma omp parallel for num_threads(nthreads) schedule(static) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t at = r * nwords + (k >> 6);
      const bool on = (static_cast<uint64_t>(bp[at]) >> (k & 63)) & 1u;
      const bool minus = sgp && ((static_cast<uint64_t>(sgp[at]) >> (k & 63)) & 1u);
      op[r * K + k] = on ? (minus ? T(-1) : T(1)) : T(0);
    }
  }
}

// The variant's entry points, one per dtype dispatch.
void pack(const TensorView& s, const TensorView& bits, const TensorView& info, const TensorView* signs, int nthreads) {
  dispatch_f32_f64(s.dtype, "s", [&](auto t) { pack_impl<decltype(t)>(s, bits, info, signs, nthreads); });
}

void unpack(const TensorView& bits, const TensorView* signs, const TensorView& out, int nthreads) {
  dispatch_f32_f64(out.dtype, "out", [&](auto t) { unpack_impl<decltype(t)>(bits, signs, out, nthreads); });
}
