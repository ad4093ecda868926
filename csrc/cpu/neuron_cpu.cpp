// Multi-step IF / LIF / PLIF on CPU: formulas in csrc/core/neuron.h.
//
// Work is split into chunks of cpu::chunk_for(T) neurons (OpenMP, static schedule). A chunk keeps its state
// (V, k, gradients) in small arrays and walks the T steps; every step touches one contiguous row
// of a chunk's neurons per tensor, so the inner loops are plain element-wise loops over float arrays
// that the compiler vectorises. Half-precision rows are converted to float in a separate loop.
// Chunk boundaries depend only on N, never on the thread count, so results are bitwise identical
// for any number of threads.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/half_bits.h"
#include "cpu/cpu_common.h"

namespace spikeforge {
namespace {

using cpu::dispatch_dtype;
using cpu::chunk_for;
using cpu::kBlock;
using cpu::load_row;
using cpu::out_row;
using cpu::store_row;
using cpu::threads_of;

template <typename C>
struct Coeffs {  // the run-time constants of the charge/reset equations, in compute type
  C vth, vr, vr_c, nd, alpha;
  bool hard, decay;
  // IF (k = 0, no w): H = V + X exactly. The general form adds 0 * (0 - (V - vr_c)), which is NaN
  // once V is infinite (an inf input with soft reset), where shared/SEMANTICS.md's H = V + X stays inf.
  bool leak;
  Coeffs(const NeuronParams& p, bool has_w)
      : vth(static_cast<C>(p.v_threshold)), vr(static_cast<C>(p.v_reset)),
        vr_c(p.hard_reset ? static_cast<C>(p.v_reset) : C(0)), nd(p.detach_reset ? C(0) : C(1)),
        alpha(static_cast<C>(p.alpha)), hard(p.hard_reset), decay(p.decay_input), leak(has_w || p.k != 0.0) {}
};

// k for each neuron of the chunk [i0, i0 + n): the scalar 1/tau, or sigmoid(w) of its channel.
template <typename C>
void fill_k(C* k, const C* w, const NeuronParams& p, int64_t i0, int64_t n) {
  if (!w) {
    std::fill(k, k + n, static_cast<C>(p.k));
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const int64_t c = ((i0 + j) / p.S) % p.C;
    k[j] = C(1) / (C(1) + vexp(-w[c]));
  }
}

template <typename C>
void fill_v_init(C* v, const C* vinit_row, const Coeffs<C>& q, int64_t n) {
  if (vinit_row) {
    std::copy(vinit_row, vinit_row + n, v);
  } else {
    std::fill(v, v + n, q.hard ? q.vr : C(0));
  }
}

// One forward step for a row of n neurons: reads V (state) and X; writes H, S and the new V both
// to the state and to v_row (each output row may be the destination tensor itself or a local row).
template <typename C>
inline void charge_fire_reset(C* __restrict v, const C* __restrict k, const C* __restrict x,
                              C* __restrict h_row, C* __restrict s_row, C* __restrict v_row, const Coeffs<C>& q,
                              int64_t n) {
  const C vth = q.vth, vr_c = q.vr_c, vr = q.vr;
  const bool hard = q.hard, decay = q.decay, leak = q.leak;  // loop invariants: the loop is unswitched
  for (int64_t j = 0; j < n; ++j) {
    const C xa = decay ? x[j] : C(0), xb = decay ? C(0) : x[j];
    const C h = leak ? v[j] + k[j] * (xa - (v[j] - vr_c)) + xb : v[j] + xb;
    const bool fire = h >= vth;
    const C vn = fire ? (hard ? vr : h - vth) : h;
    h_row[j] = h;
    s_row[j] = fire ? C(1) : C(0);
    v[j] = vn;
    v_row[j] = vn;
  }
}

// Stores a row of H. In a 16-bit dtype a rounded H that crossed v_th is moved back one ulp
// (core/half_bits.h), so backward's S = (H >= v_th) is the forward's decision.
template <typename S>
void store_h_row(S* dst, const compute_t<S>* h, compute_t<S> vth, int64_t n) {
  if constexpr (std::is_same_v<S, compute_t<S>>) {
    (void)dst, (void)h, (void)vth, (void)n;  // written in place, exact
  } else {
    for (int64_t j = 0; j < n; ++j) {
      S r = from_compute<S>(h[j]);
      if ((to_float(r) >= vth) != (h[j] >= vth)) {
        uint16_t bits;
        std::memcpy(&bits, &r, 2);
        bits = half_bits_step(bits, h[j] >= vth);
        std::memcpy(&r, &bits, 2);
      }
      dst[j] = r;
    }
  }
}

template <typename S>
void forward_impl(const TensorView& xv, const TensorView* v_init, const TensorView* wv, const TensorView& sv,
                  const TensorView* hv, const TensorView& vv, const NeuronParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t T = p.T, N = p.N, blk = chunk_for(T), nchunks = (N + blk - 1) / blk;
  const bool v_seq = vv.numel() == T * N && T != 1;
  const S* x = xv.ptr<S>();
  S* spike = sv.ptr<S>();
  S* hs = hv ? hv->ptr<S>() : nullptr;
  S* vout = vv.ptr<S>();
  const S* vinit = v_init ? v_init->ptr<S>() : nullptr;
  const C* w = wv ? wv->ptr<C>() : nullptr;
  const Coeffs<C> q(p, w != nullptr);
  (void)nthreads;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nchunks > 1)
  for (int64_t ch = 0; ch < nchunks; ++ch) {
    const int64_t i0 = ch * blk, n = std::min(blk, N - i0);
    alignas(64) C v[kBlock], k[kBlock], tmp_x[kBlock], h[kBlock], s[kBlock], vrow[kBlock], tmp_v[kBlock];
    fill_k(k, w, p, i0, n);
    fill_v_init(v, vinit ? load_row(vinit + i0, tmp_v, n) : nullptr, q, n);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = t * N + i0;
      // float32/float64 write straight into the outputs; half types go through local rows.
      C* s_dst = out_row(spike + off, s);
      C* h_dst = hs ? out_row(hs + off, h) : h;
      C* v_dst = v_seq ? out_row(vout + off, vrow) : vrow;
      charge_fire_reset(v, k, load_row(x + off, tmp_x, n), h_dst, s_dst, v_dst, q, n);
      store_row(spike + off, s_dst, n);
      if (hs) store_h_row(hs + off, h_dst, q.vth, n);
      if (v_seq) store_row(vout + off, v_dst, n);
    }
    if (!v_seq) {
      C* v_dst = out_row(vout + i0, vrow);
      std::copy(v, v + n, v_dst);
      store_row(vout + i0, v_dst, n);
    }
  }
}

template <typename S, Surrogate SG>
void backward_impl(const TensorView& gsv, const TensorView* gvv, const TensorView* xv, const TensorView* hv,
                   const TensorView* v_init, const TensorView* wv, const TensorView& gxv,
                   const TensorView* gviv, const TensorView* gkv, const NeuronParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t T = p.T, N = p.N, blk = chunk_for(T), nchunks = (N + blk - 1) / blk;
  const S* gs = gsv.ptr<S>();
  const S* gv = gvv ? gvv->ptr<S>() : nullptr;
  const bool gv_seq = gvv && gvv->numel() == T * N && T != 1;
  const S* x = xv ? xv->ptr<S>() : nullptr;
  const S* hsaved = hv ? hv->ptr<S>() : nullptr;
  const S* vinit = v_init ? v_init->ptr<S>() : nullptr;
  const C* w = wv ? wv->ptr<C>() : nullptr;
  S* gx = gxv.ptr<S>();
  S* gvi = gviv ? gviv->ptr<S>() : nullptr;
  C* gk_ws = gkv ? gkv->ptr<C>() : nullptr;
  const bool plif = gk_ws != nullptr;
  const bool recompute = hsaved == nullptr;
  const Coeffs<C> q(p, w != nullptr);
  const C alpha = q.alpha, vth = q.vth, vr = q.vr, vr_c = q.vr_c, nd = q.nd;
  const bool hard = q.hard, decay = q.decay;
  (void)nthreads;
#pragma omp parallel num_threads(nthreads) if (nchunks > 1)
  {
    // Recompute mode keeps the chunk's H for all T steps here (T * blk values, in L2).
    std::vector<C> hbuf(recompute ? static_cast<size_t>(T * blk) : 0);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ++ch) {
      const int64_t i0 = ch * blk, n = std::min(blk, N - i0);
      alignas(64) C k[kBlock], kx[kBlock], gvst[kBlock], gk[kBlock], vprev[kBlock], scratch_s[kBlock], scratch_v[kBlock];
      alignas(64) C tmp_a[kBlock], tmp_b[kBlock], tmp_c[kBlock], tmp_d[kBlock], tmp_e[kBlock], tmp_g[kBlock], gh_row[kBlock], sg_row[kBlock];
      fill_k(k, w, p, i0, n);
      for (int64_t j = 0; j < n; ++j) kx[j] = decay ? k[j] : C(1);
      const C* vinit_row = vinit ? load_row(vinit + i0, tmp_a, n) : nullptr;
      if (recompute) {  // fused forward: H rows into hbuf
        C* v = vprev;
        fill_v_init(v, vinit_row, q, n);
        for (int64_t t = 0; t < T; ++t)
          charge_fire_reset(v, k, load_row(x + t * N + i0, tmp_b, n), hbuf.data() + t * blk, scratch_s, scratch_v, q, n);
      }
      // gvst: dL/dV[t] flowing back from later steps (and from the returned v).
      if (gv && !gv_seq) {
        const C* g = load_row(gv + i0, tmp_b, n);
        std::copy(g, g + n, gvst);
      } else {
        std::fill(gvst, gvst + n, C(0));
      }
      std::fill(gk, gk + n, C(0));
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t off = t * N + i0;
        const C* h = recompute ? hbuf.data() + t * blk : load_row(hsaved + off, tmp_c, n);
        const C* g_s = load_row(gs + off, tmp_d, n);
        if (gv_seq) {
          const C* g = load_row(gv + off, tmp_e, n);
          for (int64_t j = 0; j < n; ++j) gvst[j] += g[j];
        }
        C* g_x = out_row(gx + off, tmp_g);
        // The surrogate in a loop of its own: kept apart from the selects below, the compiler
        // vectorises its exp (a 10x difference for the sigmoid/erf/piecewise_exp surrogates).
        for (int64_t j = 0; j < n; ++j) sg_row[j] = SurrogateFn<SG>::grad(h[j] - vth, alpha);
        for (int64_t j = 0; j < n; ++j) {
          const C hj = h[j], sg = sg_row[j];
          const C s = hj >= vth ? C(1) : C(0);
          const C dvdh = hard ? (C(1) - s) + (vr - hj) * sg * nd : C(1) - vth * sg * nd;
          const C gh = g_s[j] * sg + gvst[j] * dvdh;
          g_x[j] = gh * kx[j];
          gvst[j] = gh * (C(1) - k[j]);
          gh_row[j] = gh;  // kept for the PLIF term below
        }
        store_row(gx + off, g_x, n);
        if (plif) {
          // V[t-1]: the reset of H[t-1], or v_init at t = 0.
          if (t > 0) {
            const C* hp = recompute ? hbuf.data() + (t - 1) * blk : load_row(hsaved + off - N, tmp_c, n);
            for (int64_t j = 0; j < n; ++j) {
              const bool fire = hp[j] >= vth;
              vprev[j] = fire ? (hard ? vr : hp[j] - vth) : hp[j];
            }
          } else {
            fill_v_init(vprev, vinit_row, q, n);
          }
          const C* xr = decay ? load_row(x + off, tmp_b, n) : nullptr;
          for (int64_t j = 0; j < n; ++j) {
            const C xa = decay ? xr[j] : C(0);
            gk[j] += gh_row[j] * (xa - (vprev[j] - vr_c));
          }
        }
      }
      if (gvi) {
        if constexpr (std::is_same_v<S, C>) {
          std::copy(gvst, gvst + n, gvi + i0);
        } else {
          store_row(gvi + i0, gvst, n);
        }
      }
      if (plif) std::copy(gk, gk + n, gk_ws + i0);
    }
  }
}

// grad_w[c] = k_c (1 - k_c) * sum over the channel's neurons of gk, summed in double in a fixed order.
template <typename C>
void reduce_grad_w(const C* gk, const C* w, C* grad_w, const NeuronParams& p, int nthreads) {
  const int64_t N = p.N, C_ = p.C, S_ = p.S, B = C_ * S_ > 0 ? N / (C_ * S_) : 0;
  (void)nthreads;
  if (C_ == 1) {
    constexpr int64_t kPart = 1 << 14;
    const int64_t nparts = (N + kPart - 1) / kPart;
    std::vector<double> part(static_cast<size_t>(std::max<int64_t>(nparts, 1)), 0.0);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nparts > 1)
    for (int64_t b = 0; b < nparts; ++b) {
      double acc = 0.0;
      for (int64_t i = b * kPart, e = std::min(N, (b + 1) * kPart); i < e; ++i) acc += gk[i];
      part[b] = acc;
    }
    double total = 0.0;
    for (double v : part) total += v;
    const double kk = 1.0 / (1.0 + std::exp(-static_cast<double>(w[0])));
    grad_w[0] = static_cast<C>(total * kk * (1.0 - kk));
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t c = 0; c < C_; ++c) {
    double acc = 0.0;
    for (int64_t b = 0; b < B; ++b) {
      const C* row = gk + (b * C_ + c) * S_;
      for (int64_t s = 0; s < S_; ++s) acc += row[s];
    }
    const double kk = 1.0 / (1.0 + std::exp(-static_cast<double>(w[c])));
    grad_w[c] = static_cast<C>(acc * kk * (1.0 - kk));
  }
}

}  // namespace

void neuron_forward_cpu(const TensorView& x, const TensorView* v_init, const TensorView* w,
                        const TensorView& spike, const TensorView* h_out, const TensorView& v_out,
                        const NeuronParams& p, const ExecConfig& ex) {
  check_neuron_forward_args(x, v_init, w, spike, h_out, v_out, p);
  SF_CHECK_ARG(x.device == DeviceKind::cpu, "x_seq must be a CPU tensor for neuron_forward_cpu");
  if (p.T == 0 || p.N == 0) return;
  const int nt = threads_of(ex);
  dispatch_dtype(x.dtype, [&](auto tag) {
    using S = decltype(tag);
    forward_impl<S>(x, v_init, w, spike, h_out, v_out, p, nt);
  });
}

void neuron_backward_cpu(const TensorView& grad_spike, const TensorView* grad_v, const TensorView* x,
                         const TensorView* h, const TensorView* v_init, const TensorView* w,
                         const TensorView& grad_x, const TensorView* grad_v_init,
                         const TensorView* grad_k_ws, const TensorView* grad_w, const NeuronParams& p,
                         const ExecConfig& ex) {
  check_neuron_backward_args(grad_spike, grad_v, x, h, v_init, w, grad_x, grad_v_init, grad_k_ws, grad_w, p);
  SF_CHECK_ARG(grad_spike.device == DeviceKind::cpu, "grad_spike must be a CPU tensor for neuron_backward_cpu");
  const int nt = threads_of(ex);
  const TensorView* gk = grad_w ? grad_k_ws : nullptr;
  if (p.T > 0 && p.N > 0) {
    dispatch_dtype(grad_spike.dtype, [&](auto tag) {
      using S = decltype(tag);
      dispatch_surrogate(p.surrogate, [&](auto sg) {
        backward_impl<S, decltype(sg)::value>(grad_spike, grad_v, x, h, v_init, w, grad_x, grad_v_init, gk, p, nt);
      });
    });
  } else if (grad_v_init && p.N > 0) {
    // T == 0: the returned v is v_init itself, so its gradient passes straight through.
    dispatch_dtype(grad_spike.dtype, [&](auto tag) {
      using S = decltype(tag);
      S* out = grad_v_init->ptr<S>();
      if (grad_v && grad_v->numel() == p.N) {  // a [T, N] grad_v is empty when T == 0
        std::copy(grad_v->ptr<S>(), grad_v->ptr<S>() + p.N, out);
      } else {
        std::fill(out, out + p.N, from_compute<S>(0));
      }
    });
  }
  if (grad_w) {
    dispatch_dtype(grad_spike.dtype, [&](auto tag) {
      using C = compute_t<decltype(tag)>;
      if (p.N == 0 || p.T == 0) {
        std::fill(grad_w->ptr<C>(), grad_w->ptr<C>() + p.C, C(0));
      } else {
        reduce_grad_w<C>(grad_k_ws->ptr<C>(), w->ptr<C>(), grad_w->ptr<C>(), p, nt);
      }
    });
  }
}

}  // namespace spikeforge
