// Kernel body (cpu/isa_variants_cpu.h: compiled once per instruction-set variant; spike_conv2d_cpu.cpp
// checks the arguments and calls a variant's entry points at the end of this file): spike_conv2d
// (csrc/core/spike.h).
//
// groups == 1: the tile kernels of spike_tiles_cpu.h on the implicit im2col matrix, whose rows are (sample,
// output pixel) and whose columns are (input channel, kernel tap): the lists are built straight from the
// events (see build_conv_lists), never as a dense im2col. Grouped convs (and lists too large to hold) take
// scatter kernels: each active input (ci, y, x) adds one W vector per tap into a channels-last output
// buffer, one input channel at a time over a block of samples (its weights stay in L1), and grad_weight is
// the mirror image over a channels-last copy of grad_y. Every sum runs in a fixed order: results do not
// depend on the thread count. Both kernel families report whether the weights (forward) or grad_y
// (grad_weight) held an inf or NaN, and a fix-up pass then writes the NaN of the skipped zero products
// (csrc/core/spike.h "Non-finite values").
#include "cpu/spike_events_cpu.h"
#include "cpu/spike_tiles_cpu.h"

// The output taps an input pixel (y, x) feeds: for each (ky, kx) with oy*stride - pad + ky*dil == y.
// Calls f(tap, out_pixel) with tap = ky*kw + kx and out_pixel = oy*Wo + ox. Integer division is
// slow (tens of cycles) and this runs per event and tap: stride 1 skips it.
template <typename F>
inline void for_each_tap(const SpikeConvParams& p, int64_t y, int64_t x, F&& f) {
  const bool unit = p.stride_h == 1 && p.stride_w == 1;
  for (int64_t ky = 0; ky < p.kh; ++ky) {
    const int64_t ny = y + p.pad_h - ky * p.dil_h;
    if (ny < 0) continue;
    int64_t oy = ny;
    if (!unit) {
      if (ny % p.stride_h) continue;
      oy = ny / p.stride_h;
    }
    if (oy >= p.Ho) continue;
    for (int64_t kx = 0; kx < p.kw; ++kx) {
      const int64_t nx = x + p.pad_w - kx * p.dil_w;
      if (nx < 0) continue;
      int64_t ox = nx;
      if (!unit) {
        if (nx % p.stride_w) continue;
        ox = nx / p.stride_w;
      }
      if (ox >= p.Wo) continue;
      f(ky * p.kw + kx, oy * p.Wo + ox);
    }
  }
}

// n <= 64 bits of a packed row starting at bit `off`.
inline uint64_t extract_bits(const int64_t* words, int64_t off, int64_t n) {
  const int64_t w = off >> 6, sh = off & 63;
  uint64_t v = static_cast<uint64_t>(words[w]) >> sh;
  if (sh && sh + n > 64) v |= static_cast<uint64_t>(words[w + 1]) << (64 - sh);
  return n == 64 ? v : (v & ((uint64_t(1) << n) - 1));
}

// Calls f(i, value) for each active input i (index y * W + x) of plane (b, ci), in increasing i, from the
// packed bits (value 1, or -1 where the sign words have the bit set) or the values s. The plane's H*W
// elements are contiguous: they are scanned 64 at a time (a 2x2 map costs one mask, not one per row).
template <typename T, typename F>
inline void for_each_active_index(const int64_t* bits, const int64_t* signs, const T* s, const SpikeConvParams& p,
                                  int64_t b, int64_t ci, F&& f) {
  const int64_t plane = p.H * p.W, base = ci * plane, K = p.Cin * plane;
  const int64_t* words = bits ? bits + b * spike_words(K) : nullptr;
  const int64_t* sign_words = signs ? signs + b * spike_words(K) : nullptr;
  const T* sb = s ? s + b * K + base : nullptr;
  for (int64_t i0 = 0; i0 < plane; i0 += 64) {
    const int64_t n = std::min<int64_t>(64, plane - i0);
    uint64_t mask = words ? extract_bits(words, base + i0, n) : nonzero_mask(sb + i0, n);
    const uint64_t neg = sign_words ? extract_bits(sign_words, base + i0, n) : 0;
    while (mask) {
      const int j = __builtin_ctzll(mask);
      mask &= mask - 1;
      f(i0 + j, words ? ((neg >> j) & 1u ? T(-1) : T(1)) : sb[i0 + j]);
    }
  }
}

// Calls f(y, x, value) for each active input of plane (b, ci) in raster order; (y, x) advance with the
// index (no division).
template <typename T, typename F>
inline void for_each_active_in_plane(const int64_t* bits, const int64_t* signs, const T* s, const SpikeConvParams& p,
                                     int64_t b, int64_t ci, F&& f) {
  int64_t y = 0, row_end = p.W;
  for_each_active_index<T>(bits, signs, s, p, b, ci, [&](int64_t i, T v) {
    while (i >= row_end) {
      ++y;
      row_end += p.W;
    }
    f(y, i - (row_end - p.W), v);
  });
}

// dst[0..n) += v * src[0..n) (v == 1 for spikes: an add, no multiply). Vectorised by the compiler.
template <typename T>
inline void add_row(T* __restrict dst, const T* __restrict src, int64_t n, T v) {
  if (v == T(1)) {
    for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] += v * src[j];
  }
}

// Output channels per tile: the whole group unless there are too few tiles to keep the threads busy.
inline int64_t conv_chunk(int64_t channels, int64_t tiles, int nthreads) {
  int64_t chunks = 1;
  tiles = std::max<int64_t>(tiles, 1);
  if (tiles < 4 * nthreads) chunks = std::min((4 * nthreads + tiles - 1) / tiles, std::max<int64_t>(1, channels / 32));
  const int64_t width = (channels + chunks - 1) / chunks;
  return std::min(channels, (width + 7) / 8 * 8);  // whole AVX registers of float32
}

// The scatter forward loops over input channels outermost within a tile, so one channel's weights
// (taps x Cout/g values) stay in L1 while all of its events are added. Tiles are (block of samples whose
// channels-last output fits kConvBlockBytes) x (output-channel chunk); every output element is summed by
// one tile in a fixed order (input channel, then raster order): results do not depend on the thread count.
constexpr int64_t kConvBlockBytes = 256 * 1024;

// Returns false when the weights may hold an inf or NaN (see conv_forward_nonfinite).
template <typename T>
bool conv_forward_scatter(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                          const SpikeConvParams& p, int nthreads) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, taps = p.kh * p.kw, npix = p.Ho * p.Wo;
  const int64_t C = p.Cout;
  // wt[((ci * taps) + tap) * cout_g + j] = w[g * cout_g + j, ci - g * cin_g, tap]
  std::vector<T> wt(static_cast<size_t>(p.Cin * taps * cout_g));
  const int64_t per_sample = std::max<int64_t>(1, npix * C * static_cast<int64_t>(sizeof(T)));
  const int64_t bt = std::clamp<int64_t>(kConvBlockBytes / per_sample, 1, std::max<int64_t>(p.B, 1));
  const int64_t nsb = (p.B + bt - 1) / bt;
  const int64_t cw0 = conv_chunk(C, nsb, nthreads), nch = (C + cw0 - 1) / cw0;
  std::vector<T> outs(static_cast<size_t>(nthreads) * bt * npix * cw0);  // per-thread channels-last tiles
  const T* wp = w.ptr<T>();
  const T* sp = s.ptr<T>();
  const T* bp = bias ? bias->ptr<T>() : nullptr;
  T* yp = y.ptr<T>();
  const int64_t kg = cin_g * taps, nkb = (kg + 15) / 16;
  TaskFlags finite(p.groups * nkb);
#pragma omp parallel num_threads(nthreads)
  {
    // per group a [cout_g, cin_g * taps] -> [cin_g * taps, cout_g] transpose, in 16 x 16 blocks: the
    // element-wise loop read W with a stride of cin_g * taps, a cache miss per element (4608 x 512 took
    // longer than the event-driven product itself). nf[j] accumulates value * 0 (NaN iff one is not finite).
#pragma omp for schedule(static)
    for (int64_t t = 0; t < p.groups * nkb; ++t) {
      const int64_t g = t / nkb, k0 = t % nkb * 16, k1 = std::min(kg, k0 + 16);
      const T* src = wp + g * cout_g * kg;
      T* dst = wt.data() + g * kg * cout_g;
      T nf[16] = {};
      for (int64_t j0 = 0; j0 < cout_g; j0 += 16) {
        const int64_t j1 = std::min(cout_g, j0 + 16);
        for (int64_t k = k0; k < k1; ++k)
          for (int64_t j = j0; j < j1; ++j) {
            const T v = src[j * kg + k];
            dst[k * cout_g + j] = v;
            nf[j - j0] += v * T(0);
          }
      }
      T sum = T(0);
      for (const T x : nf) sum += x;
      finite.set(t, sum == T(0));
    }
    T* out = outs.data() + static_cast<int64_t>(cpu::thread_index()) * bt * npix * cw0;
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < nsb * nch; ++tile) {
      const int64_t b0 = tile / nch * bt, b1 = std::min(p.B, b0 + bt);
      const int64_t c0 = tile % nch * cw0, c1 = std::min(C, c0 + cw0), cw = c1 - c0;
      for (int64_t r = 0; r < (b1 - b0) * npix; ++r)
        for (int64_t j = 0; j < cw; ++j) out[r * cw + j] = bp ? bp[c0 + j] : T(0);
      for (int64_t ci = 0; ci < p.Cin; ++ci) {
        const int64_t g = ci / cin_g, lo = std::max(c0, g * cout_g), hi = std::min(c1, (g + 1) * cout_g);
        if (lo >= hi) continue;  // ci's group has no output channel in this chunk
        const T* wrow = wt.data() + ci * taps * cout_g + (lo - g * cout_g);
        for (int64_t b = b0; b < b1; ++b) {
          T* ob = out + (b - b0) * npix * cw + (lo - c0);
          for_each_active_in_plane<T>(nullptr, nullptr, sp, p, b, ci, [&](int64_t yy, int64_t xx, T v) {
            for_each_tap(p, yy, xx,
                         [&](int64_t tap, int64_t q) { add_row(ob + q * cw, wrow + tap * cout_g, hi - lo, v); });
          });
        }
      }
      // channels-last -> NCHW, in blocks of 16 pixels
      for (int64_t b = b0; b < b1; ++b) {
        const T* ob = out + (b - b0) * npix * cw;
        T* yb = yp + (b * C + c0) * npix;
        for (int64_t q0 = 0; q0 < npix; q0 += 16) {
          const int64_t qn = std::min<int64_t>(16, npix - q0);
          for (int64_t j = 0; j < cw; ++j)
            for (int64_t qq = 0; qq < qn; ++qq) yb[j * npix + q0 + qq] = ob[(q0 + qq) * cw + j];
        }
      }
    }
  }
  return finite.all();
}

// Samples per partition of the scatter grad_weight: each partition accumulates into its own copy of the
// weight gradient (a fixed count, not the thread count), summed in order at the end.
constexpr int64_t kConvPartition = 16;

// Returns false when grad_y may hold an inf or NaN (see conv_grad_weight_nonfinite).
template <typename T>
bool conv_grad_weight_scatter(const TensorView* bits, const TensorView* signs, const TensorView* s,
                              const TensorView& grad_y, const TensorView& grad_w, const SpikeConvParams& p,
                              int nthreads) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, taps = p.kh * p.kw, npix = p.Ho * p.Wo;
  const int64_t nparts = (p.B + kConvPartition - 1) / kConvPartition, wsize = grad_w.numel();
  const int64_t* bitp = bits ? bits->ptr<int64_t>() : nullptr;
  const int64_t* sgp = signs ? signs->ptr<int64_t>() : nullptr;
  const T* sp = s ? s->ptr<T>() : nullptr;
  const T* gy = grad_y.ptr<T>();
  T* gw = grad_w.ptr<T>();
  std::vector<T> partials(static_cast<size_t>(nparts * wsize));  // per partition, layout [Cin, taps, cout_g]
  // Per sample, not one input channel over all samples as the forward does: there each channel's events
  // re-read the whole channels-last grad_y (67 MB at [256, 64, 32, 32]) from memory, and forward+backward
  // took about twice as long (bench spikes --op conv, 5% firing).
  // per thread (one thread when there is a single partition): one sample's grad, channels-last
  std::vector<T> gcls(static_cast<size_t>(nparts > 1 ? nthreads : 1) * npix * p.Cout);
  TaskFlags finite(nparts);
#pragma omp parallel num_threads(nthreads) if (nparts > 1)
  {
    T* gcl = gcls.data() + static_cast<int64_t>(cpu::thread_index()) * npix * p.Cout;
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < nparts; ++pi) {
      T* acc = partials.data() + pi * wsize;
      std::fill(acc, acc + wsize, T(0));
      const int64_t b1 = std::min(p.B, (pi + 1) * kConvPartition);
      bool part_finite = true;
      for (int64_t b = pi * kConvPartition; b < b1; ++b) {
        const T* gb = gy + b * p.Cout * npix;
        // a contiguous vectorised check of the sample's grad_y (it also brings it into cache for the copy)
        part_finite = all_finite_values(gb, p.Cout * npix) && part_finite;
        for (int64_t q0 = 0; q0 < npix; q0 += 16) {
          const int64_t qn = std::min<int64_t>(16, npix - q0);
          for (int64_t co = 0; co < p.Cout; ++co)
            for (int64_t qq = 0; qq < qn; ++qq) gcl[(q0 + qq) * p.Cout + co] = gb[co * npix + q0 + qq];
        }
        for (int64_t ci = 0; ci < p.Cin; ++ci) {
          const int64_t g = ci / cin_g;
          T* arow = acc + ci * taps * cout_g;
          for_each_active_in_plane<T>(bitp, sgp, sp, p, b, ci, [&](int64_t yy, int64_t xx, T v) {
            for_each_tap(p, yy, xx, [&](int64_t tap, int64_t q) {
              add_row(arow + tap * cout_g, gcl + q * p.Cout + g * cout_g, cout_g, v);
            });
          });
        }
      }
      finite.set(pi, part_finite);
    }
    // fixed-order sum of the partitions, back into the [Cout, Cin/g, kh, kw] layout
#pragma omp for schedule(static)
    for (int64_t ci = 0; ci < p.Cin; ++ci) {
      const int64_t g = ci / cin_g, cl = ci - g * cin_g;
      for (int64_t tap = 0; tap < taps; ++tap)
        for (int64_t j = 0; j < cout_g; ++j) {
          const int64_t src = (ci * taps + tap) * cout_g + j;
          T sum = T(0);
          for (int64_t pi = 0; pi < nparts; ++pi) sum += partials[pi * wsize + src];
          gw[((g * cout_g + j) * cin_g + cl) * taps + tap] = sum;
        }
    }
  }
  if (nparts == 0) std::fill(gw, gw + wsize, T(0));
  return finite.all();
}

// ---- non-finite values: the zero products the event sums skip -------------------------------------
// Dense convolution forms w * x for every tap of every output position, x an input element or the zero
// padding, also where x is 0: 0 * inf = NaN. Padding counts as zeros (the definition of zero padding, and
// what torch's reference convolution and F.conv2d of an explicitly padded input give; some oneDNN kernels
// skip padded taps and show fewer NaN at the borders). The passes below run only when a kernel met an inf
// or NaN; they split over output channels (disjoint outputs: no races) and only write NaN, so their order
// does not matter.

template <typename T>
constexpr T kNaN = std::numeric_limits<T>::quiet_NaN();

// Calls f(q, i) for each output position q = oy * Wo + ox, with i the index iy * W + ix of the input element
// that tap (ky, kx) reads there, or -1 where it reads the padding.
template <typename F>
inline void for_each_tap_position(const SpikeConvParams& p, int64_t ky, int64_t kx, F&& f) {
  for (int64_t oy = 0; oy < p.Ho; ++oy) {
    const int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
    const bool row_in = iy >= 0 && iy < p.H;
    for (int64_t ox = 0; ox < p.Wo; ++ox) {
      const int64_t ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
      f(oy * p.Wo + ox, row_in && ix >= 0 && ix < p.W ? iy * p.W + ix : int64_t(-1));
    }
  }
}

// Whether input element k of sample b ([Cin * H * W] per sample) is zero: packed event bits or values.
template <typename T>
inline bool zero_input(const int64_t* bits, const T* s, int64_t b, int64_t K, int64_t k) {
  if (bits) return ((static_cast<uint64_t>(bits[b * spike_words(K) + (k >> 6)]) >> (k & 63)) & 1u) == 0;
  return s[b * K + k] == T(0);
}

// y[b, co, oy, ox] = NaN where a non-finite w[co, cl, ky, kx] meets a zero (input or padding) that its tap
// reads.
template <typename T>
void conv_forward_nonfinite(const T* s, const T* w, T* y, const SpikeConvParams& p, int nthreads) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, K = p.Cin * p.H * p.W;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t co = 0; co < p.Cout; ++co) {
    const int64_t g = co / cout_g;
    for (int64_t cl = 0; cl < cin_g; ++cl)
      for (int64_t ky = 0; ky < p.kh; ++ky)
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          if (std::isfinite(w[((co * cin_g + cl) * p.kh + ky) * p.kw + kx])) continue;
          const int64_t plane = (g * cin_g + cl) * p.H * p.W;
          for (int64_t b = 0; b < p.B; ++b) {
            T* yb = y + (b * p.Cout + co) * p.Ho * p.Wo;
            for_each_tap_position(p, ky, kx, [&](int64_t q, int64_t i) {
              if (i < 0 || zero_input<T>(nullptr, s, b, K, plane + i)) yb[q] = kNaN<T>;
            });
          }
        }
  }
}

// grad_w[co, cl, ky, kx] = NaN where a non-finite grad_y[b, co, oy, ox] meets a zero (input or padding)
// that the tap reads for that output position.
template <typename T>
void conv_grad_weight_nonfinite(const int64_t* bits, const T* s, const T* gy, T* gw, const SpikeConvParams& p,
                                int nthreads) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, K = p.Cin * p.H * p.W;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t co = 0; co < p.Cout; ++co) {
    const int64_t g = co / cout_g;
    for (int64_t cl = 0; cl < cin_g; ++cl)
      for (int64_t ky = 0; ky < p.kh; ++ky)
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          T& out = gw[((co * cin_g + cl) * p.kh + ky) * p.kw + kx];
          const int64_t plane = (g * cin_g + cl) * p.H * p.W;
          for (int64_t b = 0; b < p.B && !std::isnan(out); ++b) {
            const T* gb = gy + (b * p.Cout + co) * p.Ho * p.Wo;
            for_each_tap_position(p, ky, kx, [&](int64_t q, int64_t i) {
              if (!std::isfinite(gb[q]) && (i < 0 || zero_input(bits, s, b, K, plane + i))) out = kNaN<T>;
            });
          }
        }
  }
}

// ---- conv2d as an event-driven linear layer over the implicit im2col (groups == 1) ---------------
// Row m = (sample b, output pixel q) of the im2col matrix has an entry k = ci * taps + tap for every active
// input in q's receptive field: W [Cout, Cin, kh, kw] is then exactly the linear layer's [N, K] and the
// linear tile kernels apply: the forward keeps 16 output channels of W transposed in L2 and accumulates each
// row in registers (no read-modify-write of the output per event), grad_weight accumulates 16 columns of
// grad_y into a [K, 16] tile. The lists are built from the events (each active input appends itself to the
// rows of the taps it feeds), sample by sample in input order, so every row lists its entries in increasing
// k and the sums run in a fixed order. They hold nnz * (taps an input feeds) entries: above
// kConvListLimit the scatter kernels above run instead (no list memory).
constexpr int64_t kConvListLimit = int64_t(1) << 25;  // entries: 128 MiB of int32 indices (+ 128 / 256 MiB of
                                                      // float32 / float64 values for non-binary inputs)

// Grouped convs keep the scatter kernels (one [N, K] matrix per group would be needed), and so do large
// feature maps: the tap table is H * W * taps entries per call whatever the firing rate (a 1024 x 1024 map
// with 2 channels at 0.1% firing took 2.4x (forward) to 5.6x (forward + backward) longer than the scatter
// kernels); the lists pay on small maps with many channels. List entries are int32.
constexpr int64_t kConvListMaxTaps = int64_t(1) << 16;  // H * W * taps: 64 x 64 maps with a 3 x 3 kernel

inline bool conv_lists_apply(const SpikeConvParams& p) {
  return p.groups == 1 && p.H * p.W * p.kh * p.kw <= kConvListMaxTaps && p.Cin * p.kh * p.kw < (int64_t(1) << 31);
}

// The (tap, output pixel) pairs each input pixel feeds, computed once per call for the plane geometry
// (the same for every sample and channel): the list builders then do no index arithmetic per event.
struct TapTable {
  std::vector<int32_t> start, tap, q;  // pixel i's pairs: [start[i], start[i + 1])
  explicit TapTable(const SpikeConvParams& p) {
    const int64_t plane = p.H * p.W;
    start.reserve(plane + 1);
    tap.reserve(plane * p.kh * p.kw);
    q.reserve(plane * p.kh * p.kw);
    start.push_back(0);
    for (int64_t i = 0; i < plane; ++i) {
      for_each_tap(p, i / p.W, i % p.W, [&](int64_t t, int64_t o) {
        tap.push_back(static_cast<int32_t>(t));
        q.push_back(static_cast<int32_t>(o));
      });
      start.push_back(static_cast<int32_t>(tap.size()));
    }
  }
};

template <typename T>
bool build_conv_lists(const int64_t* bits, const int64_t* signs, const T* s, const SpikeConvParams& p, int nthreads,
                      ActiveLists<T>& a) {
  const int64_t npix = p.Ho * p.Wo, taps = p.kh * p.kw, M = p.B * npix;
  const TapTable tt(p);
  const int32_t* ts = tt.start.data();
  const int32_t* tq = tt.q.data();
  const int32_t* ttap = tt.tap.data();
  a.rowptr.assign(M + 1, 0);
  int64_t* count = a.rowptr.data() + 1;
  // pass 1: entries per row, and whether any value differs from 1 (then the values are listed too)
  bool graded = false;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (p.B > 1) reduction(|| : graded)
  for (int64_t b = 0; b < p.B; ++b) {
    int64_t* cb = count + b * npix;
    bool g = false;
    for (int64_t ci = 0; ci < p.Cin; ++ci)
      for_each_active_index<T>(bits, signs, s, p, b, ci, [&](int64_t i, T v) {
        g |= v != T(1);
        for (int32_t e = ts[i]; e < ts[i + 1]; ++e) ++cb[tq[e]];
      });
    graded = graded || g;
  }
  for (int64_t m = 0; m < M; ++m) a.rowptr[m + 1] += a.rowptr[m];
  if (a.rowptr[M] > kConvListLimit) return false;
  a.idx.resize(a.rowptr[M]);
  a.binary = !graded;
  if (graded) a.vals.resize(a.rowptr[M]);
  // pass 2: fill, each sample's rows from its own events (in input order: increasing k within a row).
  // Per-thread row cursors allocated here: an allocation failing inside the parallel region would end the
  // process instead of raising.
  std::vector<int64_t> cursors(static_cast<size_t>(nthreads) * npix);
#pragma omp parallel num_threads(nthreads) if (p.B > 1)
  {
    int64_t* c = cursors.data() + static_cast<int64_t>(cpu::thread_index()) * npix;
    int32_t* idx = a.idx.data();
    T* vals = graded ? a.vals.data() : nullptr;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < p.B; ++b) {
      std::copy(a.rowptr.begin() + b * npix, a.rowptr.begin() + (b + 1) * npix, c);
      for (int64_t ci = 0; ci < p.Cin; ++ci) {
        const int32_t k0 = static_cast<int32_t>(ci * taps);
        for_each_active_index<T>(bits, signs, s, p, b, ci, [&](int64_t i, T v) {
          for (int32_t e = ts[i]; e < ts[i + 1]; ++e) {
            const int64_t at = c[tq[e]]++;
            idx[at] = k0 + ttap[e];
            if (vals) vals[at] = v;
          }
        });
      }
    }
  }
  return true;
}

template <typename T>
void conv_forward(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                  const SpikeConvParams& p, int nthreads) {
  ActiveLists<T> a;
  const bool finite =
      conv_lists_apply(p) && build_conv_lists<T>(nullptr, nullptr, s.ptr<T>(), p, nthreads, a)
          ? gather_forward(a, w.ptr<T>(), bias ? bias->ptr<T>() : nullptr, y.ptr<T>(), p.B * p.Ho * p.Wo, p.Cout,
                           p.Cin * p.kh * p.kw, RowLayout{p.Cout, p.Ho * p.Wo}, nthreads)
          : conv_forward_scatter<T>(s, w, bias, y, p, nthreads);
  if (!finite) conv_forward_nonfinite(s.ptr<T>(), w.ptr<T>(), y.ptr<T>(), p, nthreads);
}

template <typename T>
void conv_grad_weight(const TensorView* bits, const TensorView* signs, const TensorView* s, const TensorView& grad_y,
                      const TensorView& grad_w, const SpikeConvParams& p, int nthreads) {
  const int64_t* bp = bits ? bits->ptr<int64_t>() : nullptr;
  const T* sp = s ? s->ptr<T>() : nullptr;
  ActiveLists<T> a;
  const bool finite =
      conv_lists_apply(p) && build_conv_lists<T>(bp, signs ? signs->ptr<int64_t>() : nullptr, sp, p, nthreads, a)
          ? scatter_grad_weight(a, grad_y.ptr<T>(), grad_w.ptr<T>(), p.B * p.Ho * p.Wo, p.Cout, p.Cin * p.kh * p.kw,
                                RowLayout{p.Cout, p.Ho * p.Wo}, nthreads)
          : conv_grad_weight_scatter<T>(bits, signs, s, grad_y, grad_w, p, nthreads);
  if (!finite) conv_grad_weight_nonfinite(bp, sp, grad_y.ptr<T>(), grad_w.ptr<T>(), p, nthreads);
}

// The variant's entry points, one per dtype dispatch.
void conv2d_forward(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                    const SpikeConvParams& p, int nthreads) {
  dispatch_f32_f64(s.dtype, "s", [&](auto t) { conv_forward<decltype(t)>(s, w, bias, y, p, nthreads); });
}

void conv2d_grad_weight(const TensorView* bits, const TensorView* signs, const TensorView* s, const TensorView& grad_y,
                        const TensorView& grad_w, const SpikeConvParams& p, int nthreads) {
  dispatch_f32_f64(grad_y.dtype, "grad_out",
                   [&](auto t) { conv_grad_weight<decltype(t)>(bits, signs, s, grad_y, grad_w, p, nthreads); });
}
