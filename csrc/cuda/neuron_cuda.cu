// Multi-step IF / LIF / PLIF on CUDA: formulas in csrc/core/neuron.h, structure and names of
// csrc/cpu/neuron_cpu.cpp (the ground truth this file mirrors formula for formula).
//
// One thread owns VEC consecutive neurons, keeps their state (V, k, gradients) in registers and walks
// the T steps. At each step the threads of a warp touch consecutive VEC-neuron groups of one [t, :]
// row, so every load and store is coalesced. VEC fills a 16-byte access (4 floats, 8 halves) when N
// and every pointer allow it, else it is 1. A grid-stride loop over the groups lets a grid sized from
// the SM count cover any N, and all index arithmetic is 64-bit (T * N can pass 2^31).
//
// Nothing here allocates or synchronises with the host: every buffer comes from the caller and all
// work is queued on ex.stream, so the calls can be captured into a CUDA graph. grad_w is reduced by a
// second kernel in a fixed order (no atomics), so it is bitwise identical from run to run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/half_bits.h"
#include "core/neuron.h"
#include "cuda/cuda_common.cuh"

namespace spikeforge {
namespace {

using namespace cuda_detail;

// grad_k_ws is float32 whatever the activation dtype; a group's VEC values are one or two float4
// when the launch picked VEC > 1 (its pointer is then 16-byte aligned, and i % VEC == 0).
template <int VEC>
__device__ __forceinline__ void store_f32(float* base, int64_t i, const float (&in)[VEC]) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int j = 0; j < VEC; j += 4) {
      *reinterpret_cast<float4*>(base + i + j) = make_float4(in[j], in[j + 1], in[j + 2], in[j + 3]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) base[i + j] = in[j];
  }
}

// ------------------------------------------------------------------------------------------------
// the neuron equations (as the CPU's Coeffs / fill_k / fill_v_init / charge_fire_reset)
// ------------------------------------------------------------------------------------------------

struct Coeffs {  // the run-time constants of the charge/reset equations
  float vth, vr, vr_c, nd, alpha;
  bool hard, decay;
  bool leak;  // false for IF: H = V + X exactly (0 * inf would turn an infinite V into NaN); see CPU
  Coeffs(const NeuronParams& p, bool has_w)
      : vth(static_cast<float>(p.v_threshold)), vr(static_cast<float>(p.v_reset)),
        vr_c(p.hard_reset ? static_cast<float>(p.v_reset) : 0.0f), nd(p.detach_reset ? 0.0f : 1.0f),
        alpha(static_cast<float>(p.alpha)), hard(p.hard_reset), decay(p.decay_input),
        leak(has_w || p.k != 0.0) {}
};

// H saved in a 16-bit dtype keeps the forward's firing decision (core/half_bits.h): a rounded value
// that crossed v_th moves one ulp back, so backward's S = (H >= v_th) matches the forward.
template <typename S>
__device__ __forceinline__ float keep_side(float h, float vth) {
  if constexpr (std::is_same_v<S, float>) {
    return h;
  } else {
    using Tr = StorageTraits<S>;
    uint16_t b = Tr::from_float(h);
    if ((Tr::to_float(b) >= vth) != (h >= vth)) b = half_bits_step(b, h >= vth);
    return Tr::to_float(b);
  }
}

// k for the neurons [i0, i0 + VEC): the scalar 1/tau, or sigmoid(w) of each neuron's channel.
template <int VEC>
__device__ __forceinline__ void fill_k(float (&k)[VEC], const float* w, float k_scalar, int64_t C, int64_t S,
                                       int64_t i0) {
  if (!w) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) k[j] = k_scalar;
    return;
  }
  // Neuron i uses channel (i / S) % C; walking (c, r) forward from i0 costs two 64-bit divisions per
  // group instead of two per neuron.
  const int64_t q = i0 / S;
  int64_t r = i0 - q * S, c = q % C;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    k[j] = 1.0f / (1.0f + vexp(-w[c]));
    if (++r == S) {
      r = 0;
      if (++c == C) c = 0;
    }
  }
}

template <typename S, int VEC>
__device__ __forceinline__ void fill_v_init(float (&v)[VEC], const void* v_init, int64_t i0, const Coeffs& q) {
  if (v_init) {
    Packed<S, VEC>::load_row(v_init, i0, v);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = q.hard ? q.vr : 0.0f;
  }
}

// One forward step of one neuron: reads V (state), X; writes H, S, V.
__device__ __forceinline__ void charge_fire_reset(float& v, float k, float x, float& h, float& s, const Coeffs& q) {
  const float xa = q.decay ? x : 0.0f, xb = q.decay ? 0.0f : x;
  h = q.leak ? v + k * (xa - (v - q.vr_c)) + xb : v + xb;
  const bool fire = h >= q.vth;
  s = fire ? 1.0f : 0.0f;
  v = fire ? (q.hard ? q.vr : h - q.vth) : h;
}

// V[t] from H[t] (the reset alone), for V[t-1] in the PLIF gradient.
__device__ __forceinline__ float reset_of(float h, const Coeffs& q) {
  const bool fire = h >= q.vth;
  return fire ? (q.hard ? q.vr : h - q.vth) : h;
}

// ------------------------------------------------------------------------------------------------
// forward
// ------------------------------------------------------------------------------------------------

struct ForwardArgs {
  const void* x;
  const void* v_init;  // or nullptr
  const float* w;      // or nullptr
  void* spike;
  void* h_out;         // or nullptr
  void* v_out;
  int64_t T, N, C, S;
  float k;
  bool v_seq;          // v_out is [T, N]: write V at every step, else only the last V
};

// Rows each thread keeps in flight. A thread's steps are a serial chain (V[t] needs V[t - 1]), so
// with one load per step a thread has one 16-byte load outstanding and 2048 threads per SM cannot cover
// HBM latency (measured on an H100: ~65% of copy bandwidth with one row of look-ahead). A ring of
// kDepth rows, indexed only by compile-time slots (an unrolled inner loop), keeps kDepth loads of
// each stream in flight without touching local memory.
constexpr int kDepth = 4;

template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads) forward_kernel(const ForwardArgs a, const Coeffs q) {
  using P = Packed<S, VEC>;
  const int64_t T = a.T, N = a.N, ngroups = N / VEC;
  for (int64_t g = first_group(); g < ngroups; g += group_stride()) {
    const int64_t i0 = g * VEC;
    float k[VEC], v[VEC];
    fill_k(k, a.w, a.k, a.C, a.S, i0);
    fill_v_init<S>(v, a.v_init, i0, q);
    typename P::Raw x_ring[kDepth];
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      if (d < T) x_ring[d] = P::load(a.x, i0 + d * N);
    }
    int64_t off = i0;
    for (int64_t t0 = 0; t0 < T; t0 += kDepth) {
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const int64_t t = t0 + d;
        if (t >= T) break;
        float x[VEC], h[VEC], s[VEC];
        P::unpack(x_ring[d], x);
        if (t + kDepth < T) x_ring[d] = P::load(a.x, off + kDepth * N);  // the slot's next row
#pragma unroll
        for (int j = 0; j < VEC; ++j) charge_fire_reset(v[j], k[j], x[j], h[j], s[j], q);
        P::store_row(a.spike, off, s);
        if (a.h_out) {
          float hk[VEC];
#pragma unroll
          for (int j = 0; j < VEC; ++j) hk[j] = keep_side<S>(h[j], q.vth);
          P::store_row(a.h_out, off, hk);
        }
        if (a.v_seq) P::store_row(a.v_out, off, v);
        off += N;
      }
    }
    if (!a.v_seq) P::store_row(a.v_out, i0, v);
  }
}

// ------------------------------------------------------------------------------------------------
// backward
// ------------------------------------------------------------------------------------------------

struct BackwardArgs {
  const void* grad_spike;
  const void* grad_v;   // or nullptr
  const void* x;        // or nullptr; read only for PLIF with decay_input
  const void* h;        // H saved by the forward
  const void* v_init;   // or nullptr
  const float* w;       // or nullptr
  void* grad_x;
  void* grad_v_init;    // or nullptr
  float* grad_k_ws;     // per-neuron dL/dk, or nullptr (then no PLIF term is accumulated)
  int64_t T, N, C, S;
  float k;
  bool gv_seq;          // grad_v is [T, N] (v_seq was returned), else [N] (last V) or absent
};

// PLIF is a template flag, not a run-time test: PLIF's extra state (the X ring, the per-neuron dL/dk)
// would otherwise hold registers in every LIF / IF launch too (measured on an H100: 139 registers,
// one block per SM, 12.5% occupancy and ~40% of copy bandwidth for the LIF backward).
// The backward keeps two rows of each stream in flight (kDepthBwd): it reads two streams per step
// (grad_spike and H), and a 4-deep ring of both costs 104 registers for 8 halves per thread, two blocks
// per SM. At depth 2 and three blocks per SM (the register cap below) the loads in flight per SM are
// about the same and the latency hiding across warps is 1.5x.
constexpr int kDepthBwd = 2;

template <typename S, Surrogate SG, int VEC, bool PLIF>
__global__ void __launch_bounds__(kThreads, PLIF ? 2 : 3) backward_kernel(const BackwardArgs a, const Coeffs q) {
  using P = Packed<S, VEC>;
  const int64_t T = a.T, N = a.N, ngroups = N / VEC;
  constexpr bool plif = PLIF;  // then a.grad_k_ws != nullptr
  const float alpha = q.alpha, vth = q.vth, vr = q.vr, vr_c = q.vr_c, nd = q.nd;
  const bool hard = q.hard, decay = q.decay;
  for (int64_t g = first_group(); g < ngroups; g += group_stride()) {
    const int64_t i0 = g * VEC;
    float k[VEC], gvst[VEC], gk[VEC], h[VEC];
    fill_k(k, a.w, a.k, a.C, a.S, i0);
    // gvst: dL/dV[t] flowing back from later steps (and from the returned v).
    if (a.grad_v && !a.gv_seq) {
      P::load_row(a.grad_v, i0, gvst);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) gvst[j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) gk[j] = 0.0f;
    // Backward walks t from T - 1 down; slot d of a ring holds row T - 1 - (t0 + d) and is refilled
    // with the row kDepthBwd steps further back once consumed. PLIF's V[t - 1] comes from H[t - 1],
    // which is the next slot of the H ring (already loaded), so H is read once.
    typename P::Raw gs_ring[kDepthBwd], h_ring[kDepthBwd], x_ring[kDepthBwd];
    const bool need_x = plif && decay;
#pragma unroll
    for (int d = 0; d < kDepthBwd; ++d) {
      if (d < T) {
        const int64_t o = (T - 1 - d) * N + i0;
        gs_ring[d] = P::load(a.grad_spike, o);
        h_ring[d] = P::load(a.h, o);
        if (need_x) x_ring[d] = P::load(a.x, o);
      }
    }
    int64_t off = (T - 1) * N + i0;
    for (int64_t t0 = 0; t0 < T; t0 += kDepthBwd) {
#pragma unroll
      for (int d = 0; d < kDepthBwd; ++d) {
        const int64_t t = T - 1 - (t0 + d);
        if (t < 0) break;
        typename P::Raw gv_raw{};
        if (a.gv_seq) gv_raw = P::load(a.grad_v, off);
        float g_s[VEC], g_x[VEC], gh_row[VEC], xr[VEC];
        P::unpack(h_ring[d], h);
        P::unpack(gs_ring[d], g_s);
        if (need_x) P::unpack(x_ring[d], xr);
        if (t - kDepthBwd >= 0) {  // refill the consumed slots (h's slot is still read below as H[t])
          gs_ring[d] = P::load(a.grad_spike, off - kDepthBwd * N);
          if (need_x) x_ring[d] = P::load(a.x, off - kDepthBwd * N);
        }
        if (a.gv_seq) {
          float gq[VEC];
          P::unpack(gv_raw, gq);
#pragma unroll
          for (int j = 0; j < VEC; ++j) gvst[j] += gq[j];
        }
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float hj = h[j];
          const float sg = SurrogateFn<SG>::grad(hj - vth, alpha);
          const float s = hj >= vth ? 1.0f : 0.0f;
          const float dvdh = hard ? (1.0f - s) + (vr - hj) * sg * nd : 1.0f - vth * sg * nd;
          const float gh = g_s[j] * sg + gvst[j] * dvdh;
          g_x[j] = gh * (decay ? k[j] : 1.0f);
          gvst[j] = gh * (1.0f - k[j]);
          gh_row[j] = gh;  // kept for the PLIF term below
        }
        P::store_row(a.grad_x, off, g_x);
        if (plif) {
          // V[t-1]: the reset of H[t-1] (the next slot of the H ring), or v_init at t = 0.
          float vprev[VEC];
          if (t > 0) {
            float hp[VEC];
            P::unpack(h_ring[(d + 1) % kDepthBwd], hp);
#pragma unroll
            for (int j = 0; j < VEC; ++j) vprev[j] = reset_of(hp[j], q);
          } else {
            fill_v_init<S>(vprev, a.v_init, i0, q);
          }
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            const float xa = decay ? xr[j] : 0.0f;
            gk[j] += gh_row[j] * (xa - (vprev[j] - vr_c));
          }
        }
        if (t - kDepthBwd >= 0) h_ring[d] = P::load(a.h, off - kDepthBwd * N);
        off -= N;
      }
    }
    if (a.grad_v_init) P::store_row(a.grad_v_init, i0, gvst);
    if (plif) store_f32(a.grad_k_ws, i0, gk);
  }
}

// ------------------------------------------------------------------------------------------------
// grad_w: deterministic per-channel reduction of grad_k_ws
// ------------------------------------------------------------------------------------------------

constexpr int kReduceThreadsMax = 1024;
constexpr int kReduceUnroll = 4;  // trips whose loads are issued together before their adds

// grad_w[c] = k_c (1 - k_c) * sum over the channel's neurons of gk, summed in double.
// One block per channel (grid-stride over channels). The channel's B*S neurons are numbered
// e = b*S + s (neuron (b*C + c)*S + s); thread tid takes runs of W consecutive e starting at
// (tid + j*blockDim) * W, adds them in that order, and a fixed shared-memory tree adds the threads.
// The order depends only on (C, S, B, blockDim), never on the grid, timing or alignment: V4 only
// changes how a run of W = 4 is fetched (one float4 or four floats), not what is added when.
// W = 4 needs the run to be contiguous in memory: C == 1 (the channel is all of gk) or S % 4 == 0.
template <int W, bool V4>
__global__ void __launch_bounds__(kReduceThreadsMax)
    reduce_grad_w_kernel(const float* gk, const float* w, float* grad_w, int64_t C, int64_t S, int64_t B) {
  static_assert(W == 1 || W == 4, "runs of 1 or 4 neurons");
  static_assert(!V4 || W == 4, "float4 loads need runs of 4");
  __shared__ double partial[kReduceThreadsMax];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int64_t M = B * S;                       // neurons of one channel
  const int64_t step = static_cast<int64_t>(nt) * W;  // e advances by this per trip
  const int64_t db = step / S, ds = step % S;
  const int64_t e0 = static_cast<int64_t>(tid) * W, b0 = e0 / S, s0 = e0 % S;

  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double acc = 0.0;
    int64_t e = e0, b = b0, s = s0;
    auto run_at = [&]() { return gk + (b * C + c) * S + s; };
    auto advance = [&]() {
      e += step;
      b += db;
      s += ds;
      if (s >= S) {
        s -= S;
        ++b;
      }
    };
    auto fetch = [&](const float* p, float (&r)[W]) {
      if constexpr (V4) {
        const float4 f = *reinterpret_cast<const float4*>(p);
        r[0] = f.x;
        r[1] = f.y;
        r[2] = f.z;
        r[3] = f.w;
      } else {
#pragma unroll
        for (int q = 0; q < W; ++q) r[q] = p[q];
      }
    };
    // Trips whose runs all lie inside the channel: fetch kReduceUnroll runs, then add them in order.
    while (e + (kReduceUnroll - 1) * step + W <= M) {
      float r[kReduceUnroll][W];
#pragma unroll
      for (int u = 0; u < kReduceUnroll; ++u) {
        fetch(run_at(), r[u]);
        advance();
      }
#pragma unroll
      for (int u = 0; u < kReduceUnroll; ++u) {
#pragma unroll
        for (int q = 0; q < W; ++q) acc += static_cast<double>(r[u][q]);
      }
    }
    // The remaining trips, one at a time; only the channel's last run can be partial (C == 1, N % 4 != 0).
    for (; e < M; advance()) {
      const float* p = run_at();
      if (e + W <= M) {
        float r[W];
        fetch(p, r);
#pragma unroll
        for (int q = 0; q < W; ++q) acc += static_cast<double>(r[q]);
      } else {
        for (int q = 0; e + q < M; ++q) acc += static_cast<double>(p[q]);
      }
    }

    partial[tid] = acc;
    __syncthreads();
    for (int half = nt / 2; half > 0; half >>= 1) {  // blockDim is a power of two
      if (tid < half) partial[tid] += partial[tid + half];
      __syncthreads();
    }
    if (tid == 0) {
      const double kk = 1.0 / (1.0 + exp(-static_cast<double>(w[c])));
      grad_w[c] = static_cast<float>(partial[0] * kk * (1.0 - kk));
    }
    // No barrier needed before the next channel: partial[0] is rewritten only by thread 0, and no
    // thread reads partial[i > 0] after the tree's last barrier.
  }
}

template <typename S>
void forward_launch(const ForwardArgs& a, const Coeffs& q, int device, cudaStream_t stream) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(S));
  const bool vec = a.N % kVec == 0 && aligned16(a.x) && aligned16(a.v_init) && aligned16(a.spike) &&
                   aligned16(a.h_out) && aligned16(a.v_out);
  if (vec) {
    forward_kernel<S, kVec><<<grid_for(a.N / kVec, device), kThreads, 0, stream>>>(a, q);
  } else {
    forward_kernel<S, 1><<<grid_for(a.N, device), kThreads, 0, stream>>>(a, q);
  }
  check_launch("the neuron forward kernel");
}

template <typename S>
void backward_launch(const BackwardArgs& a, const Coeffs& q, Surrogate sg, int device, cudaStream_t stream) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(S));
  // x is read only by PLIF with decay_input; its alignment must not cost the vector path otherwise.
  const void* x_read = a.grad_k_ws && q.decay ? a.x : nullptr;
  const bool vec = a.N % kVec == 0 && aligned16(a.grad_spike) && aligned16(a.grad_v) && aligned16(x_read) &&
                   aligned16(a.h) && aligned16(a.v_init) && aligned16(a.grad_x) && aligned16(a.grad_v_init) &&
                   aligned16(a.grad_k_ws);
  dispatch_surrogate(sg, [&](auto tag) {
    constexpr Surrogate SG = decltype(tag)::value;
    const bool plif = a.grad_k_ws != nullptr;
    if (vec && plif) {
      backward_kernel<S, SG, kVec, true><<<grid_for(a.N / kVec, device), kThreads, 0, stream>>>(a, q);
    } else if (vec) {
      backward_kernel<S, SG, kVec, false><<<grid_for(a.N / kVec, device), kThreads, 0, stream>>>(a, q);
    } else if (plif) {
      backward_kernel<S, SG, 1, true><<<grid_for(a.N, device), kThreads, 0, stream>>>(a, q);
    } else {
      backward_kernel<S, SG, 1, false><<<grid_for(a.N, device), kThreads, 0, stream>>>(a, q);
    }
  });
  check_launch("the neuron backward kernel");
}

void reduce_grad_w(const float* gk, const float* w, float* grad_w, const NeuronParams& p, int device,
                   cudaStream_t stream) {
  const int64_t N = p.N, C = p.C, S = p.S, B = N / (C * S);
  const int64_t M = B * S;  // neurons per channel
  // Few, long channels (C == 1 above all) get the largest block, as one block streams each channel;
  // the choice depends only on the shape, so the summation order stays fixed.
  const int threads = M >= 32 * kReduceThreadsMax ? kReduceThreadsMax : kThreads;
  const int64_t cap = static_cast<int64_t>(sm_count(device)) * kBlocksPerSm;
  const unsigned int grid = static_cast<unsigned int>(C < cap ? C : cap);
  if (C == 1 || S % 4 == 0) {
    // Runs of 4 lie in one contiguous row; float4 when the base allows (idx % 4 == 0 always holds).
    if (aligned16(gk)) {
      reduce_grad_w_kernel<4, true><<<grid, threads, 0, stream>>>(gk, w, grad_w, C, S, B);
    } else {
      reduce_grad_w_kernel<4, false><<<grid, threads, 0, stream>>>(gk, w, grad_w, C, S, B);
    }
  } else {
    reduce_grad_w_kernel<1, false><<<grid, threads, 0, stream>>>(gk, w, grad_w, C, S, B);
  }
  check_launch("the grad_w reduction kernel");
}

}  // namespace

void neuron_forward_cuda(const TensorView& x, const TensorView* v_init, const TensorView* w,
                         const TensorView& spike, const TensorView* h_out, const TensorView& v_out,
                         const NeuronParams& p, const ExecConfig& ex) {
  check_neuron_forward_args(x, v_init, w, spike, h_out, v_out, p);
  constexpr const char* fn = "neuron_forward_cuda";
  require_cuda(&x, "x_seq", fn);
  require_cuda(v_init, "v_init", fn);
  require_cuda(w, "w", fn);
  require_cuda(&spike, "spike_seq", fn);
  require_cuda(h_out, "h_seq", fn);
  require_cuda(&v_out, "v_out", fn);
  check_cuda_dtype(x.dtype, "x_seq");
  if (p.T == 0 || p.N == 0) return;

  const DeviceGuard guard(x.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  ForwardArgs a;
  a.x = x.data;
  a.v_init = v_init ? v_init->data : nullptr;
  a.w = w ? w->ptr<const float>() : nullptr;
  a.spike = spike.data;
  a.h_out = h_out ? h_out->data : nullptr;
  a.v_out = v_out.data;
  a.T = p.T;
  a.N = p.N;
  a.C = p.C;
  a.S = p.S;
  a.k = static_cast<float>(p.k);
  a.v_seq = v_out.numel() == p.T * p.N && p.T != 1;
  const Coeffs q(p, w != nullptr);
  dispatch_dtype(x.dtype, [&](auto tag) {
    forward_launch<typename decltype(tag)::type>(a, q, x.device_index, stream);
  });
}

void neuron_backward_cuda(const TensorView& grad_spike, const TensorView* grad_v, const TensorView* x,
                          const TensorView* h, const TensorView* v_init, const TensorView* w,
                          const TensorView& grad_x, const TensorView* grad_v_init,
                          const TensorView* grad_k_ws, const TensorView* grad_w, const NeuronParams& p,
                          const ExecConfig& ex) {
  check_neuron_backward_args(grad_spike, grad_v, x, h, v_init, w, grad_x, grad_v_init, grad_k_ws, grad_w, p);
  constexpr const char* fn = "neuron_backward_cuda";
  require_cuda(&grad_spike, "grad_spike", fn);
  require_cuda(grad_v, "grad_v", fn);
  require_cuda(x, "x_seq", fn);
  require_cuda(h, "h_seq", fn);
  require_cuda(v_init, "v_init", fn);
  require_cuda(w, "w", fn);
  require_cuda(&grad_x, "grad_x", fn);
  require_cuda(grad_v_init, "grad_v_init", fn);
  require_cuda(grad_k_ws, "grad_k_ws", fn);
  require_cuda(grad_w, "grad_w", fn);
  check_cuda_dtype(grad_spike.dtype, "grad_spike");
  SF_CHECK_ARG(h, "h_seq is required on CUDA (for recompute, run the forward into a workspace first)");
  const TensorView* gk = grad_w ? grad_k_ws : nullptr;
  // The shared checks already guarantee this (grad_w needs w); the kernel dereferences x on that path.
  SF_CHECK_ARG(!gk || !p.decay_input || x, "PLIF with decay_input needs x_seq in backward");

  const bool run = p.T > 0 && p.N > 0;
  if (!run && !(grad_v_init && p.N > 0) && !grad_w) return;
  const DeviceGuard guard(grad_spike.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  const int device = grad_spike.device_index;

  if (run) {
    BackwardArgs a;
    a.grad_spike = grad_spike.data;
    a.grad_v = grad_v ? grad_v->data : nullptr;
    a.x = x ? x->data : nullptr;
    a.h = h->data;
    a.v_init = v_init ? v_init->data : nullptr;
    a.w = w ? w->ptr<const float>() : nullptr;
    a.grad_x = grad_x.data;
    a.grad_v_init = grad_v_init ? grad_v_init->data : nullptr;
    a.grad_k_ws = gk ? gk->ptr<float>() : nullptr;
    a.T = p.T;
    a.N = p.N;
    a.C = p.C;
    a.S = p.S;
    a.k = static_cast<float>(p.k);
    a.gv_seq = grad_v && grad_v->numel() == p.T * p.N && p.T != 1;
    const Coeffs q(p, w != nullptr);
    dispatch_dtype(grad_spike.dtype, [&](auto tag) {
      backward_launch<typename decltype(tag)::type>(a, q, p.surrogate, device, stream);
    });
  } else if (grad_v_init && p.N > 0) {
    // T == 0: the returned v is v_init itself, so its gradient passes straight through. A grad_v of
    // T*N = 0 elements (an empty v_seq was returned) carries no gradient.
    const size_t bytes = static_cast<size_t>(p.N) * (grad_spike.dtype == DType::f32 ? 4 : 2);
    if (grad_v && grad_v->numel() == p.N) {
      check_cuda(cudaMemcpyAsync(grad_v_init->data, grad_v->data, bytes, cudaMemcpyDeviceToDevice, stream),
                 "cudaMemcpyAsync (grad_v_init)");
    } else {
      check_cuda(cudaMemsetAsync(grad_v_init->data, 0, bytes, stream), "cudaMemsetAsync (grad_v_init)");
    }
  }
  if (grad_w) {
    if (run) {
      reduce_grad_w(grad_k_ws->ptr<const float>(), w->ptr<const float>(), grad_w->ptr<float>(), p, device, stream);
    } else {
      check_cuda(cudaMemsetAsync(grad_w->data, 0, static_cast<size_t>(p.C) * sizeof(float), stream),
                 "cudaMemsetAsync (grad_w)");
    }
  }
}

}  // namespace spikeforge
