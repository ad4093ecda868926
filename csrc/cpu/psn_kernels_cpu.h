// Kernel body (cpu/isa_variants_cpu.h: compiled once per instruction-set variant; psn_cpu.cpp checks the
// arguments and calls a variant's entry points at the end of this file): the PSN family on CPU, formulas
// in csrc/core/psn.h.
//
// A chunk of kChunk neurons loads its T_in rows of X once (converted to float), mixes them over time
// with W in registers/L1 (T_out x T_in multiply-adds per neuron, vectorised across neurons), fires and
// writes S: the only memory traffic is X in and S out. The backward recomputes H the same way.
// grad_W / grad_b are summed per fixed partition of kPSNPartition neurons (float64 partials), then over
// partitions in order: bitwise identical for any thread count.

// A PSN chunk holds T_in rows of X and T_out rows of gH: 256 neurons keep them in L1/L2 for T <= 64.
constexpr int64_t kChunk = 256;

// Input range [lo, hi) that output row t reads (the causal band, or everything).
inline void band_of(const PSNParams& p, int64_t t, int64_t& lo, int64_t& hi) {
  if (p.band <= 0) {
    lo = 0;
    hi = p.T_in;
    return;
  }
  const int64_t last = t + (p.T_in - p.T_out);
  lo = std::max<int64_t>(0, last - p.band + 1);
  hi = std::min<int64_t>(p.T_in, last + 1);
}

// Loads the chunk's T_in rows of X into xb (row stride kChunk).
template <typename S>
void load_chunk(const S* x, compute_t<S>* xb, int64_t T_in, int64_t N, int64_t i0, int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = 0; i < T_in; ++i) {
    const S* src = x + i * N + i0;
    C* dst = xb + i * kChunk;
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<C>(to_float(src[j]));
  }
}

// dst[o][j] = init[o] + sum over k in [k0, k1) with take(k) of coef[o][k] * rows[k * kChunk + j], for NR outputs
// o and j < n, the terms added in ascending k. Float blocks of 64 / NR neurons keep their sums in eight 8-float
// vectors across all the terms: each multiply-add costs one load from the L1 rows, and with NR = 2 the two
// outputs share each row load (8 multiply-adds per 4 row loads and 2 broadcasts: then the loop is bound by
// the multiply-adds, not the loads). The loop this replaces read and wrote the destination row for every term
// (load / store bound: PSN's forward at T = 32 ran at the speed of the eager reference, 61 ms on the Intel
// Xeon). Each neuron's additions are the same, in the same order, as that loop's (the compiler contracts
// a * b + c alike in both): the same values bitwise, for NR = 1 or 2.
template <int NR, typename C, typename Take>
inline void mix_rows(C* const (&dst)[NR], const C (&init)[NR], const C* __restrict rows, const C* const (&coef)[NR],
                     int64_t k0, int64_t k1, int64_t n, Take take) {
  int64_t j0 = 0;
  if constexpr (std::is_same_v<C, float>) {
    typedef float V __attribute__((vector_size(32), aligned(4), may_alias));
    constexpr int kV = 8, kAcc = 8 / NR;
    for (; j0 + kV * kAcc <= n; j0 += kV * kAcc) {
      V acc[NR][kAcc];
      for (int o = 0; o < NR; ++o)
        for (int a = 0; a < kAcc; ++a) acc[o][a] = init[o] - V{};  // init in every lane (0 + init turns -0 to +0)
      for (int64_t k = k0; k < k1; ++k) {
        if (!take(k)) continue;
        const V* r = reinterpret_cast<const V*>(rows + k * kChunk + j0);
        V xr[kAcc];
        for (int a = 0; a < kAcc; ++a) xr[a] = r[a];
        for (int o = 0; o < NR; ++o) {
          const float c = coef[o][k];
          for (int a = 0; a < kAcc; ++a) acc[o][a] += c * xr[a];
        }
      }
      for (int o = 0; o < NR; ++o)
        for (int a = 0; a < kAcc; ++a) *reinterpret_cast<V*>(dst[o] + j0 + a * kV) = acc[o][a];
    }
  }
  for (int o = 0; o < NR; ++o) {
    C* __restrict d = dst[o];
    for (int64_t j = j0; j < n; ++j) d[j] = init[o];
    for (int64_t k = k0; k < k1; ++k) {
      if (!take(k)) continue;
      const C c = coef[o][k];
      const C* __restrict r = rows + k * kChunk;
      for (int64_t j = j0; j < n; ++j) d[j] += c * r[j];
    }
  }
}

constexpr auto kEveryTerm = [](int64_t) { return true; };

// Prefetches (into L2) the lines of rows [r0, r1) of the next chunk [i0, i0 + n) of a [rows, N] tensor: the
// chunk's rows are 1 KiB pieces of rows 4 MiB apart (at N = 2^20), which the hardware prefetchers do not fetch
// ahead, so without this a chunk waited for its T_in rows before its (compute-bound at large T) time mix began.
template <typename S>
inline void prefetch_rows(const S* src, int64_t N, int64_t r0, int64_t r1, int64_t i0, int64_t n) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(S));
  for (int64_t r = r0; r < r1; ++r) {
    const S* row = src + r * N + i0;
    for (int64_t j = 0; j < n; j += kLine) __builtin_prefetch(row + j, 0, 2);
  }
}

// Whether outputs t and t + 1 read the same inputs (every output of a PSN; neighbours of a masked or sliding
// PSN only at the start, where the band is clipped): then they are charged together.
inline bool same_band(const PSNParams& p, int64_t t) {
  if (t + 1 >= p.T_out) return false;
  int64_t lo0, hi0, lo1, hi1;
  band_of(p, t, lo0, hi0);
  band_of(p, t + 1, lo1, hi1);
  return lo0 == lo1 && hi0 == hi1;
}

// h[o] = b[t + o] + sum over the band of W[t + o, i] X[i], inputs in ascending order, for the nr (1, or 2 when
// same_band(p, t)) outputs from t.
template <typename C>
inline void charge_rows(C* const* h, int nr, const C* __restrict xb, const C* __restrict w, const C* __restrict b,
                        const PSNParams& p, int64_t t, int64_t n) {
  int64_t lo, hi;
  band_of(p, t, lo, hi);
  const C* wt = w + t * p.T_in;
  if (nr == 2) {
    mix_rows<2>({h[0], h[1]}, {b[t], b[t + 1]}, xb, {wt, wt + p.T_in}, lo, hi, n, kEveryTerm);
  } else {
    mix_rows<1>({h[0]}, {b[t]}, xb, {wt}, lo, hi, n, kEveryTerm);
  }
}

template <typename S>
void forward_impl(const TensorView& xv, const TensorView& wv, const TensorView& bv, const TensorView& sv,
                  const TensorView* hv, const PSNParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t N = p.N, nchunks = (N + kChunk - 1) / kChunk;
  const S* x = xv.ptr<S>();
  const C* w = wv.ptr<C>();
  const C* b = bv.ptr<C>();
  S* spike = sv.ptr<S>();
  S* hs = hv ? hv->ptr<S>() : nullptr;
  const int team = team_for(nthreads, nchunks);
  ThreadBuffers<C> xbs(team, p.T_in * kChunk);  // each thread's X rows
#pragma omp parallel num_threads(team) if (team > 1)
  {
    C* xb = xbs.mine();
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ++ch) {
      const int64_t i0 = ch * kChunk, n = std::min(kChunk, N - i0);
      alignas(64) C h[2][kChunk], s[kChunk], hrow[2][kChunk];
      load_chunk(x, xb, p.T_in, N, i0, n);
      // the next chunk's X rows (this thread's, under the static schedule), spread over the steps
      const int64_t i1 = i0 + kChunk, n1 = std::min(kChunk, N - i1);
      for (int64_t t = 0; t < p.T_out;) {
        const int nr = same_band(p, t) ? 2 : 1;  // outputs charged together
        if (n1 > 0) prefetch_rows(x, N, t * p.T_in / p.T_out, (t + nr) * p.T_in / p.T_out, i1, n1);
        C* hd[2];
        for (int o = 0; o < nr; ++o) hd[o] = hs ? out_row(hs + (t + o) * N + i0, hrow[o]) : h[o];
        charge_rows(hd, nr, xb, w, b, p, t, n);
        for (int o = 0; o < nr; ++o) {
          const int64_t off = (t + o) * N + i0;
          C* s_dst = out_row(spike + off, s);
          for (int64_t j = 0; j < n; ++j) s_dst[j] = hd[o][j] >= C(0) ? C(1) : C(0);
          store_row(spike + off, s_dst, n);
          if (hs) store_row(hs + off, hd[o], n);
        }
        t += nr;
      }
    }
  }
}

// The weight gradient's dot products gH[t] . X[i] over a partition's neurons, for float: each (t, i) pair keeps
// 8 float lanes (lane l sums the neurons j = l mod 8, each chunk's in ascending j) in `lanes` across up to
// kLaneChunks chunks; flush_lanes then adds each pair's lanes, in a fixed order, to its float64 partial. A block
// of TB x IB pairs shares its row loads, and its TB * IB independent sums hide the latency of the multiply-adds.
// Reducing the lanes once per chunk instead (8 lanes x 1024 pairs per 256 neurons at T = 32) was about a third
// of add_weight_dots; the summation order depends on N alone, never on the thread count.
constexpr int kLanes = 8;
constexpr int64_t kLaneChunks = 8;  // chunks per flush: 2048 neurons, 256 float terms per lane

template <int TB, int IB>
inline void dots_block_lanes(const float* __restrict gh, const float* __restrict xb, int64_t t0, int64_t i0, int64_t n,
                             int64_t T_in, float* __restrict lanes) {
  typedef float V __attribute__((vector_size(32), aligned(4), may_alias));
  V acc[TB][IB];
  for (int a = 0; a < TB; ++a)
    for (int b = 0; b < IB; ++b) acc[a][b] = *reinterpret_cast<const V*>(lanes + ((t0 + a) * T_in + i0 + b) * kLanes);
  int64_t j0 = 0;
  for (; j0 + kLanes <= n; j0 += kLanes) {
    V g[TB], x[IB];
    for (int a = 0; a < TB; ++a) g[a] = *reinterpret_cast<const V*>(gh + (t0 + a) * kChunk + j0);
    for (int b = 0; b < IB; ++b) x[b] = *reinterpret_cast<const V*>(xb + (i0 + b) * kChunk + j0);
    for (int a = 0; a < TB; ++a)
      for (int b = 0; b < IB; ++b) acc[a][b] += g[a] * x[b];
  }
  for (int a = 0; a < TB; ++a)
    for (int b = 0; b < IB; ++b) {
      float* l = lanes + ((t0 + a) * T_in + i0 + b) * kLanes;
      *reinterpret_cast<V*>(l) = acc[a][b];
      for (int64_t j = j0; j < n; ++j) l[j - j0] += gh[(t0 + a) * kChunk + j] * xb[(i0 + b) * kChunk + j];  // tail
    }
}

// dot[a][b] = gh[t0 + a] . xb[i0 + b] over the chunk's n neurons, in ascending j (float64; float takes the lanes).
template <int TB, int IB, typename C>
inline void dots_block(const C* __restrict gh, const C* __restrict xb, int64_t t0, int64_t i0, int64_t n,
                       C (&dot)[TB][IB]) {
  for (int a = 0; a < TB; ++a) {
    for (int b = 0; b < IB; ++b) {
      const C* __restrict g = gh + (t0 + a) * kChunk;
      const C* __restrict x = xb + (i0 + b) * kChunk;
      C d = C(0);
      for (int64_t j = 0; j < n; ++j) d += g[j] * x[j];
      dot[a][b] = d;
    }
  }
}

// For every (t, i) in t's band: lanes += the chunk's gH[t] . X[i] (float), or acc[t * T_in + i] += it (float64),
// over blocks of 2 outputs x 4 inputs (pairs outside a band are formed with their block and left out by
// flush_lanes / here).
template <typename C>
void add_weight_dots(const C* gh, const C* xb, const PSNParams& p, int64_t n, double* acc, float* lanes) {
  const int64_t T_in = p.T_in, T_out = p.T_out;
  auto add = [&](auto tb, auto ib, int64_t t0, int64_t i0) {
    constexpr int TB = decltype(tb)::value, IB = decltype(ib)::value;
    bool any = false;
    for (int a = 0; a < TB; ++a) {
      int64_t lo, hi;
      band_of(p, t0 + a, lo, hi);
      any = any || (i0 < hi && i0 + IB > lo);
    }
    if (!any) return;
    if constexpr (std::is_same_v<C, float>) {
      dots_block_lanes<TB, IB>(gh, xb, t0, i0, n, T_in, lanes);
    } else {
      (void)lanes;
      C dot[TB][IB];
      dots_block<TB, IB>(gh, xb, t0, i0, n, dot);
      for (int a = 0; a < TB; ++a) {
        int64_t lo, hi;
        band_of(p, t0 + a, lo, hi);
        for (int b = 0; b < IB; ++b) {
          const int64_t i = i0 + b;
          if (i >= lo && i < hi) acc[(t0 + a) * T_in + i] += static_cast<double>(dot[a][b]);
        }
      }
    }
  };
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  using Four = std::integral_constant<int, 4>;
  int64_t t0 = 0;
  for (; t0 + 2 <= T_out; t0 += 2) {
    int64_t i0 = 0;
    for (; i0 + 4 <= T_in; i0 += 4) add(Two{}, Four{}, t0, i0);
    for (; i0 < T_in; ++i0) add(Two{}, One{}, t0, i0);
  }
  for (; t0 < T_out; ++t0) {
    int64_t i0 = 0;
    for (; i0 + 4 <= T_in; i0 += 4) add(One{}, Four{}, t0, i0);
    for (; i0 < T_in; ++i0) add(One{}, One{}, t0, i0);
  }
}

// acc[t * T_in + i] += the lanes of (t, i), added in a fixed order, for every (t, i) in t's band; the lanes are
// zeroed for the next chunks.
inline void flush_lanes(float* lanes, const PSNParams& p, double* acc) {
  for (int64_t t = 0; t < p.T_out; ++t) {
    int64_t lo, hi;
    band_of(p, t, lo, hi);
    for (int64_t i = lo; i < hi; ++i) {
      const float* v = lanes + (t * p.T_in + i) * kLanes;
      acc[t * p.T_in + i] += static_cast<double>(((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])));
    }
  }
  std::fill(lanes, lanes + p.T_out * p.T_in * kLanes, 0.0f);
}

template <typename S, Surrogate SG>
void backward_impl(const TensorView& gsv, const TensorView& xv, const TensorView& wv, const TensorView& bv,
                   const TensorView* gxv, const TensorView* partv, const PSNParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t N = p.N, T_in = p.T_in, T_out = p.T_out;
  const int64_t nparts = psn_num_partitions(N), row = T_out * (T_in + 1);
  const S* gs = gsv.ptr<S>();
  const S* x = xv.ptr<S>();
  const C* w = wv.ptr<C>();
  const C* b = bv.ptr<C>();
  S* gx = gxv ? gxv->ptr<S>() : nullptr;
  double* part = partv ? partv->ptr<double>() : nullptr;
  const C alpha = static_cast<C>(p.alpha);
  constexpr bool kLaneSums = std::is_same_v<C, float>;  // add_weight_dots' float lanes
  // each thread's rows: X and gH of a chunk, columns i (and i + 1) of W; its float64 partials of grad_W /
  // grad_b and their float lanes (zeroed here; flush_lanes leaves them so)
  const int64_t per_acc = part ? row : 0;
  const int team = team_for(nthreads, nparts);
  ThreadBuffers<C> rows_c(team, (T_in + T_out) * kChunk + 2 * T_out);
  ThreadBuffers<double> accs(team, per_acc);
  ThreadBuffers<float> laness(team, part && kLaneSums ? T_out * T_in * kLanes : 0);
#pragma omp parallel num_threads(team) if (team > 1)
  {
    C* xb = rows_c.mine();
    C* gh = xb + T_in * kChunk;
    C* wcol = gh + T_out * kChunk;
    double* acc = accs.mine();
    float* lanes = laness.mine();
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < nparts; ++pi) {
      std::fill(acc, acc + per_acc, 0.0);
      const int64_t pend = std::min(N, (pi + 1) * kPSNPartition);
      int64_t pending = 0;  // chunks in the lanes since the last flush
      for (int64_t i0 = pi * kPSNPartition; i0 < pend; i0 += kChunk) {
        const int64_t n = std::min(kChunk, pend - i0);
        alignas(64) C h[2][kChunk], tmp[kChunk], gxr[2][kChunk];
        load_chunk(x, xb, T_in, N, i0, n);
        const int64_t i1 = i0 + kChunk, n1 = std::min(kChunk, N - i1);  // the next chunk, prefetched
        // gH = gS * g'(H), H recomputed exactly as the forward computed it (two outputs together where they
        // read the same inputs)
        for (int64_t t = 0; t < T_out;) {
          const int nr = same_band(p, t) ? 2 : 1;
          if (n1 > 0) {
            prefetch_rows(x, N, t * T_in / T_out, (t + nr) * T_in / T_out, i1, n1);
            prefetch_rows(gs, N, t, t + nr, i1, n1);
          }
          C* hp[2] = {h[0], h[1]};
          charge_rows(hp, nr, xb, w, b, p, t, n);
          for (int o = 0; o < nr; ++o) {
            const C* g = load_row(gs + (t + o) * N + i0, tmp, n);
            C* ght = gh + (t + o) * kChunk;
            for (int64_t j = 0; j < n; ++j) ght[j] = SurrogateFn<SG>::grad(h[o][j], alpha, C(0));
            for (int64_t j = 0; j < n; ++j) ght[j] *= g[j];
          }
          t += nr;
        }
        if (gx) {  // grad_X[i] = sum_t W[t, i] gH[t], over the outputs whose band holds input i
          // a PSN's every output reads every input: two inputs' gradients together
          const int nr = p.band <= 0 && T_in > 1 ? 2 : 1;
          for (int64_t i = 0; i < T_in; i += nr) {
            const int m = static_cast<int>(std::min<int64_t>(nr, T_in - i));
            C* dst[2];
            for (int o = 0; o < m; ++o) {
              dst[o] = out_row(gx + (i + o) * N + i0, gxr[o]);
              for (int64_t t = 0; t < T_out; ++t) wcol[o * T_out + t] = w[t * T_in + i + o];
            }
            if (m == 2) {
              mix_rows<2>({dst[0], dst[1]}, {C(0), C(0)}, gh, {wcol, wcol + T_out}, 0, T_out, n, kEveryTerm);
            } else {
              mix_rows<1>({dst[0]}, {C(0)}, gh, {wcol}, 0, T_out, n, [&](int64_t t) {
                int64_t lo, hi;
                band_of(p, t, lo, hi);
                return i >= lo && i < hi;
              });
            }
            for (int o = 0; o < m; ++o) store_row(gx + (i + o) * N + i0, dst[o], n);
          }
        }
        if (part) {  // grad_W[t, i] += gH[t] . X[i], grad_b[t] += sum gH[t]
          add_weight_dots(gh, xb, p, n, acc, lanes);
          if (kLaneSums && (++pending == kLaneChunks || i0 + kChunk >= pend)) {
            flush_lanes(lanes, p, acc);
            pending = 0;
          }
          for (int64_t t = 0; t < T_out; ++t) {
            const C* ght = gh + t * kChunk;
            C sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < n; ++j) sum += ght[j];
            acc[T_out * T_in + t] += static_cast<double>(sum);
          }
        }
      }
      if (part) std::copy(acc, acc + per_acc, part + pi * row);
    }
  }
}

// grad_W / grad_b from the partials, partitions summed in order.
template <typename C>
void reduce_partials(const double* part, int64_t nparts, int64_t row, C* grad_w, C* grad_b, int64_t nw) {
  for (int64_t e = 0; e < row; ++e) {
    double s = 0.0;
    for (int64_t pi = 0; pi < nparts; ++pi) s += part[pi * row + e];
    if (e < nw) {
      if (grad_w) grad_w[e] = static_cast<C>(s);
    } else if (grad_b) {
      grad_b[e - nw] = static_cast<C>(s);
    }
  }
}

// The variant's entry points (psn_cpu.cpp checks the arguments).
void psn_forward(const TensorView& x, const TensorView& w, const TensorView& b, const TensorView& spike,
                 const TensorView* h_out, const PSNParams& p, int nt) {
  dispatch_dtype(x.dtype, [&](auto tag) { forward_impl<decltype(tag)>(x, w, b, spike, h_out, p, nt); });
}

void psn_backward(const TensorView& grad_spike, const TensorView& x, const TensorView& w, const TensorView& b,
                  const TensorView* grad_x, const TensorView* partials, const TensorView* grad_w,
                  const TensorView* grad_b, const PSNParams& p, int nt) {
  const bool want_params = grad_w || grad_b;
  dispatch_dtype(x.dtype, [&](auto tag) {
    using S = decltype(tag);
    using C = compute_t<S>;
    if (p.N > 0 && p.T_in > 0) {
      dispatch_surrogate<kNumSpikingJellySurrogates>(p.surrogate, [&](auto sg) {
        backward_impl<S, decltype(sg)::value>(grad_spike, x, w, b, grad_x, want_params ? partials : nullptr, p, nt);
      });
    } else if (grad_x && grad_x->numel() > 0) {  // T_out == 0: nothing reaches X
      std::fill(grad_x->ptr<S>(), grad_x->ptr<S>() + grad_x->numel(), from_compute<S>(0));
    }
    if (!want_params) return;
    const int64_t nw = p.T_out * p.T_in;
    if (p.N == 0 || p.T_in == 0) {
      if (grad_w) std::fill(grad_w->ptr<C>(), grad_w->ptr<C>() + nw, C(0));
      if (grad_b) {  // with T_in == 0, H = b: grad_b = sum over neurons of gS g'(b)
        C* gb = grad_b->ptr<C>();
        std::fill(gb, gb + p.T_out, C(0));
        if (p.N > 0) {
          const S* gs = grad_spike.ptr<S>();
          const C* bb = b.ptr<C>();
          dispatch_surrogate<kNumSpikingJellySurrogates>(p.surrogate, [&](auto sg) {
            for (int64_t t = 0; t < p.T_out; ++t) {
              double acc = 0.0;
              const C g = SurrogateFn<decltype(sg)::value>::grad(bb[t], static_cast<C>(p.alpha), C(0));
              for (int64_t j = 0; j < p.N; ++j) acc += static_cast<double>(to_float(gs[t * p.N + j])) * g;
              gb[t] = static_cast<C>(acc);
            }
          });
        }
      }
      return;
    }
    reduce_partials<C>(partials->ptr<double>(), psn_num_partitions(p.N), p.T_out * (p.T_in + 1),
                       grad_w ? grad_w->ptr<C>() : nullptr, grad_b ? grad_b->ptr<C>() : nullptr, nw);
  });
}
