// Multi-step neurons on CUDA: the skeleton of csrc/cpu/neuron_kernels_cpu.h around the dynamics of
// csrc/core/neuron.h (the same step functions, called per neuron).
//
// One thread owns VEC consecutive neurons, keeps their state (and, in backward, its gradients) in
// registers and walks the T steps. At each step the threads of a warp touch consecutive VEC-neuron groups
// of one [t, :] row, so every load and store is coalesced. VEC fills a 16-byte access (4 floats, 8 halves)
// for the LIF when N and every pointer allow it, else it is 1 (the other models, whose larger state would
// not fit the registers of a vector group). A grid-stride loop over the groups lets a grid sized from the
// SM count cover any N, and all index arithmetic is 64-bit (T * N can pass 2^31).
//
// Saved values: the LIF writes H in the activation dtype (core/half_bits.h keeps the firing decision),
// the other models their saved values in float32 ([NSV, T, N]). Nothing here allocates or synchronises
// with the host: every buffer comes from the caller and all work is queued on ex.stream, so the calls can
// be captured into a CUDA graph. Slot gradients are reduced by a second kernel in a fixed order (no
// atomics), so they are bitwise identical from run to run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "core/half_bits.h"
#include "core/neuron.h"
#include "cuda/cuda_common.cuh"

namespace spikeforge {
namespace {

using namespace cuda_detail;

constexpr bool snn_model(NeuronModel m) {
  return is_snntorch_family(m);
}
constexpr bool norse_model(NeuronModel m) {
  return m == NeuronModel::norse_lif;
}
// V[-1] without an initial state: v_reset for a SpikingJelly-style hard reset, else 0 (norse_lif always has one)
constexpr bool starts_at_v_reset(NeuronModel m) {
  return !neuron_reads_prev_state(m) && m != NeuronModel::ilif;
}

// The model's step functions behind one interface (as csrc/cpu/neuron_kernels_cpu.h's Step).
template <NeuronModel M>
struct Step {
  static __device__ __forceinline__ float forward(const NeuronCoeffs<float>& q, const NeuronSlots<float>& sl,
                                                  float (&st)[kMaxStates], float x, float (&sv)[kMaxSaved]) {
    if constexpr (norse_model(M)) {
      return norse_forward(q, sl, st, x, sv);
    } else if constexpr (snn_model(M)) {
      return snn_forward<M>(q, sl, st, x, sv);
    } else {
      return sj_forward<M>(q, sl.v[0], st, x, sv);
    }
  }
  static __device__ __forceinline__ void state_after(const NeuronCoeffs<float>& q, const float (&sv)[kMaxSaved],
                                                     float (&st)[kMaxStates]) {
    if constexpr (norse_model(M)) {
      norse_state_after(sv, st);
    } else if constexpr (snn_model(M)) {
      snn_state_after<M>(sv, st);
    } else {
      sj_state_after<M>(q, sv, st);
    }
  }
  template <Surrogate SG>
  static __device__ __forceinline__ float backward(const NeuronCoeffs<float>& q, const NeuronSlots<float>& sl,
                                                   const float (&sv)[kMaxSaved], const float (&prev)[kMaxStates],
                                                   float x, float gs, float (&gst)[kMaxStates],
                                                   float (&gsl)[kMaxParams], bool want_gk) {
    float g[2];
    surrogate_values<M, SG>(q, sl, sv, g);
    if constexpr (norse_model(M)) {
      return norse_backward(q, sl, sv, prev, x, gs, g, gst, gsl);
    } else if constexpr (snn_model(M)) {
      return snn_backward<M>(q, sl, sv, prev, x, gs, g, gst, gsl);
    } else {
      return sj_backward<M>(q, backward_leak(q, sl.v[0]), sv, prev[0], x, gs, g, gst, gsl[0], want_gk);
    }
  }
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

// The coefficient slots of the neurons [i0, i0 + VEC): entry (i / S) % C of each slot.
template <int VEC>
__device__ __forceinline__ void load_slots(float (&sl)[kMaxParams][VEC], const float* const (&slots)[kMaxParams],
                                           const int64_t (&C)[kMaxParams], const int64_t (&S)[kMaxParams], int nslots,
                                           int64_t i0) {
  for (int s = 0; s < kMaxParams; ++s) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) sl[s][j] = 0.0f;
    if (s >= nslots || !slots[s]) continue;
    // walking (channel, position in its run) forward from i0: two divisions per group, not per neuron
    const int64_t q = i0 / S[s];
    int64_t r = i0 - q * S[s], c = q % C[s];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      sl[s][j] = slots[s][c];
      if (++r == S[s]) {
        r = 0;
        if (++c == C[s]) c = 0;
      }
    }
  }
}

// Row access for the float32 saved values (one element per neuron; VEC neurons are consecutive).
template <int VEC>
__device__ __forceinline__ void load_f32(const float* base, int64_t i, float (&out)[VEC]) {
#pragma unroll
  for (int j = 0; j < VEC; ++j) out[j] = base[i + j];
}
template <int VEC>
__device__ __forceinline__ void store_f32(float* base, int64_t i, const float (&in)[VEC]) {
#pragma unroll
  for (int j = 0; j < VEC; ++j) base[i + j] = in[j];
}

struct ForwardArgs {
  const void* x;
  const void* init[kMaxStates];    // or nullptr
  const float* slots[kMaxParams];  // or nullptr
  int64_t C[kMaxParams], S[kMaxParams];
  void* spike;
  void* state_out[kMaxStates];  // or nullptr; [T, N] (every step) where seq[s], else [N] (the last)
  void* saved;                  // or nullptr: [NSV, T, N], activation dtype for the LIF, else float32
  int64_t T, N;
  bool seq[kMaxStates];
  void* state_last[kMaxStates];  // or nullptr: the last state ([N]) besides state_out
};

// Rows each thread keeps in flight (forward x): a thread's steps are a serial chain, so with one load
// per step a thread has one load outstanding and 2048 threads per SM cannot cover HBM latency
// (measured on an H100: ~65% of copy bandwidth with one row of look-ahead). A ring of kDepth rows,
// indexed only by compile-time slots, keeps kDepth loads in flight without local memory.
constexpr int kDepth = 4;

template <typename S, NeuronModel M, int VEC>
__global__ void __launch_bounds__(kThreads) forward_kernel(const ForwardArgs a, const NeuronCoeffs<float> q) {
  using P = Packed<S, VEC>;
  constexpr int NS = neuron_states(M), NSV = neuron_saved(M), NSL = neuron_slots(M);
  const int64_t T = a.T, N = a.N, ngroups = N / VEC;
  for (int64_t g = first_group(); g < ngroups; g += group_stride()) {
    const int64_t i0 = g * VEC;
    float sl[kMaxParams][VEC];
    load_slots<VEC>(sl, a.slots, a.C, a.S, NSL, i0);
    float st[kMaxStates][VEC];
#pragma unroll
    for (int s = 0; s < kMaxStates; ++s) {
      if (s < NS && a.init[s]) {
        P::load_row(a.init[s], i0, st[s]);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) st[s][j] = (s == 0 && starts_at_v_reset(M) && q.hard) ? q.vr : 0.0f;
      }
    }
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
        float x[VEC], spk[VEC], svr[kMaxSaved][VEC];
        P::unpack(x_ring[d], x);
        if (t + kDepth < T) x_ring[d] = P::load(a.x, off + kDepth * N);  // the slot's next row
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          float stj[kMaxStates] = {st[0][j], st[1][j], st[2][j]}, svj[kMaxSaved] = {0.0f, 0.0f, 0.0f};
          const NeuronSlots<float> slj{{sl[0][j], sl[1][j], sl[2][j], sl[3][j]}};
          spk[j] = Step<M>::forward(q, slj, stj, x[j], svj);
#pragma unroll
          for (int s = 0; s < NS; ++s) st[s][j] = stj[s];
#pragma unroll
          for (int k = 0; k < NSV; ++k) svr[k][j] = svj[k];
        }
        P::store_row(a.spike, off, spk);
        if (a.saved) {
          if constexpr (neuron_saves_in_activation_dtype(M)) {
            float hk[VEC];
#pragma unroll
            for (int j = 0; j < VEC; ++j) hk[j] = keep_side<S>(svr[0][j], q.vth);
            P::store_row(a.saved, off, hk);
          } else {
#pragma unroll
            for (int k = 0; k < NSV; ++k) store_f32<VEC>(static_cast<float*>(a.saved) + k * T * N, off, svr[k]);
          }
        }
#pragma unroll
        for (int s = 0; s < NS; ++s) {
          if (a.seq[s]) P::store_row(a.state_out[s], off, st[s]);
        }
        off += N;
      }
    }
#pragma unroll
    for (int s = 0; s < NS; ++s) {
      if (a.state_out[s] && !a.seq[s]) P::store_row(a.state_out[s], i0, st[s]);
      if (a.state_last[s]) P::store_row(a.state_last[s], i0, st[s]);
    }
  }
}

struct BackwardArgs {
  const void* grad_spike;
  const void* grad_out[kMaxStates];  // or nullptr; [T, N] (each step's state) where seq[s], else [N]
  const void* x;                     // or nullptr
  const void* saved;                 // the forward's saved values
  const void* init[kMaxStates];
  const float* slots[kMaxParams];
  int64_t C[kMaxParams], S[kMaxParams];
  void* grad_x;
  void* grad_init[kMaxStates];  // or nullptr
  float* slot_ws[kMaxParams];   // per-neuron slot gradients, or nullptr
  int64_t T, N;
  bool seq[kMaxStates];
  bool want_slot_grad;
  bool read_x;
};

// The saved values of step t for the group (activation dtype for the LIF, else float32).
template <typename S, NeuronModel M, int VEC>
__device__ __forceinline__ void load_saved(const BackwardArgs& a, int64_t t, int64_t i0, float (&sv)[kMaxSaved][VEC]) {
  constexpr int NSV = neuron_saved(M);
  const int64_t off = t * a.N + i0;
  if constexpr (neuron_saves_in_activation_dtype(M)) {
    Packed<S, VEC>::load_row(a.saved, off, sv[0]);
  } else {
#pragma unroll
    for (int k = 0; k < NSV; ++k) load_f32<VEC>(static_cast<const float*>(a.saved) + k * a.T * a.N, off, sv[k]);
  }
}

// PLIF / the snnTorch family / alpha / norse_lif need the previous state (and x); the others need only the saved
// values and the incoming gradients: a template flag, so the plain LIF keeps its registers.
template <typename S, NeuronModel M, Surrogate SG, int VEC, bool PREV>
__global__ void __launch_bounds__(kThreads, 2) backward_kernel(const BackwardArgs a, const NeuronCoeffs<float> q) {
  using P = Packed<S, VEC>;
  constexpr int NS = neuron_states(M), NSV = neuron_saved(M), NSL = neuron_slots(M);
  const int64_t T = a.T, N = a.N, ngroups = N / VEC;
  for (int64_t g = first_group(); g < ngroups; g += group_stride()) {
    const int64_t i0 = g * VEC;
    float sl[kMaxParams][VEC], gsl[kMaxParams][VEC], gst[kMaxStates][VEC], init[kMaxStates][VEC];
    load_slots<VEC>(sl, a.slots, a.C, a.S, NSL, i0);
#pragma unroll
    for (int s = 0; s < kMaxStates; ++s) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) gst[s][j] = 0.0f;
      if (s < NS && a.grad_out[s] && !a.seq[s]) P::load_row(a.grad_out[s], i0, gst[s]);
      if (PREV) {
        if (s < NS && a.init[s]) {
          P::load_row(a.init[s], i0, init[s]);
        } else {
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            init[s][j] = (s == 0 && starts_at_v_reset(M) && q.hard) ? q.vr : 0.0f;
          }
        }
      }
    }
#pragma unroll
    for (int s = 0; s < kMaxParams; ++s) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) gsl[s][j] = 0.0f;
    }
    // Step t's inputs (grad_spike, saved values) are loaded one step ahead, while step t + 1 computes: a
    // thread's steps form a serial chain, and without look-ahead each would wait for its loads (the
    // previous LIF kernel measured the same on an H100). Walking t down, step t - 1's saved values are also
    // step t's "previous state" for the models that read it.
    float sv[kMaxSaved][VEC] = {}, g_s[VEC];
    load_saved<S, M, VEC>(a, T - 1, i0, sv);
    P::load_row(a.grad_spike, (T - 1) * N + i0, g_s);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t off = t * N + i0;
      float sv_next[kMaxSaved][VEC] = {}, gs_next[VEC] = {}, prev[kMaxStates][VEC] = {};
      if (t > 0) {
        load_saved<S, M, VEC>(a, t - 1, i0, sv_next);
        P::load_row(a.grad_spike, off - N, gs_next);
      }
      if (PREV) {
        if (t > 0) {
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            const float svj[kMaxSaved] = {sv_next[0][j], NSV > 1 ? sv_next[1][j] : 0.0f,
                                          NSV > 2 ? sv_next[2][j] : 0.0f};
            float stj[kMaxStates] = {0.0f, 0.0f, 0.0f};
            Step<M>::state_after(q, svj, stj);
#pragma unroll
            for (int s = 0; s < kMaxStates; ++s) prev[s][j] = stj[s];
          }
        } else {
#pragma unroll
          for (int s = 0; s < kMaxStates; ++s) {
#pragma unroll
            for (int j = 0; j < VEC; ++j) prev[s][j] = init[s][j];
          }
        }
      }
      float g_x[VEC], xr[VEC];
#pragma unroll
      for (int s = 0; s < NS; ++s) {  // the gradient of the returned state s after step t
        if (!a.seq[s]) continue;
        float gq[VEC];
        P::load_row(a.grad_out[s], off, gq);
#pragma unroll
        for (int j = 0; j < VEC; ++j) gst[s][j] += gq[j];
      }
      if (a.read_x) {
        P::load_row(a.x, off, xr);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) xr[j] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float svj[kMaxSaved] = {sv[0][j], NSV > 1 ? sv[1][j] : 0.0f, NSV > 2 ? sv[2][j] : 0.0f};
        float prevj[kMaxStates] = {0.0f, 0.0f, 0.0f};
        if (PREV) {
#pragma unroll
          for (int s = 0; s < kMaxStates; ++s) prevj[s] = prev[s][j];
        }
        float gstj[kMaxStates] = {gst[0][j], gst[1][j], gst[2][j]};
        float gslj[kMaxParams] = {gsl[0][j], gsl[1][j], gsl[2][j], gsl[3][j]};
        const NeuronSlots<float> slj{{sl[0][j], sl[1][j], sl[2][j], sl[3][j]}};
        g_x[j] = Step<M>::template backward<SG>(q, slj, svj, prevj, xr[j], g_s[j], gstj, gslj, a.want_slot_grad);
#pragma unroll
        for (int s = 0; s < kMaxStates; ++s) gst[s][j] = gstj[s];
#pragma unroll
        for (int s = 0; s < kMaxParams; ++s) gsl[s][j] = gslj[s];
      }
      P::store_row(a.grad_x, off, g_x);
      if (t > 0) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          g_s[j] = gs_next[j];
#pragma unroll
          for (int k = 0; k < kMaxSaved; ++k) sv[k][j] = sv_next[k][j];
        }
      }
    }
#pragma unroll
    for (int s = 0; s < NS; ++s) {
      if (a.grad_init[s]) P::store_row(a.grad_init[s], i0, gst[s]);
    }
#pragma unroll
    for (int s = 0; s < NSL; ++s) {
      if (a.slot_ws[s]) store_f32<VEC>(a.slot_ws[s], i0, gsl[s]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// slot gradients: deterministic per-entry reduction of the per-neuron workspace
// ------------------------------------------------------------------------------------------------
constexpr int kReduceThreadsMax = 1024;

// grad[c] = sum over the neurons i with (i / S) % C == c of ws[i], summed in double. One block per entry
// (grid-stride over entries). The entry's B*S neurons are numbered e = b*S + s (neuron (b*C + c)*S + s);
// thread tid adds e = tid, tid + blockDim, ... in that order, and a fixed shared-memory tree adds the
// threads: the order depends only on (C, S, B, blockDim), never on the grid or timing.
__global__ void __launch_bounds__(kReduceThreadsMax)
    reduce_slot_grad_kernel(const float* ws, float* grad, int64_t C, int64_t S, int64_t B) {
  __shared__ double partial[kReduceThreadsMax];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int64_t M = B * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double acc = 0.0;
    for (int64_t e = tid; e < M; e += nt) {
      const int64_t b = e / S, s = e - b * S;
      acc += static_cast<double>(ws[(b * C + c) * S + s]);
    }
    partial[tid] = acc;
    __syncthreads();
    for (int half = nt / 2; half > 0; half >>= 1) {  // blockDim is a power of two
      if (tid < half) partial[tid] += partial[tid + half];
      __syncthreads();
    }
    if (tid == 0) grad[c] = static_cast<float>(partial[0]);
    __syncthreads();  // partial[0] is read above before the next entry's writes
  }
}

void reduce_slot_grad(const float* ws, float* grad, const ParamLayout& L, int64_t N, int device, cudaStream_t stream) {
  const int64_t C = L.C, S = L.S, B = N / (C * S);
  const int threads = B * S >= 32 * kReduceThreadsMax ? kReduceThreadsMax : kThreads;
  const int64_t cap = static_cast<int64_t>(sm_count(device)) * kBlocksPerSm;
  const unsigned int grid = static_cast<unsigned int>(C < cap ? C : cap);
  reduce_slot_grad_kernel<<<grid, threads, 0, stream>>>(ws, grad, C, S, B);
  check_launch("the slot-gradient reduction kernel");
}

// ------------------------------------------------------------------------------------------------
// launches
// ------------------------------------------------------------------------------------------------
template <typename S, NeuronModel M>
void forward_launch(const ForwardArgs& a, const NeuronCoeffs<float>& q, int device, cudaStream_t stream) {
  constexpr int kVec = M == NeuronModel::lif ? 16 / static_cast<int>(sizeof(S)) : 1;
  bool vec = kVec > 1 && a.N % kVec == 0 && aligned16(a.x) && aligned16(a.spike) && aligned16(a.saved);
  for (int s = 0; s < kMaxStates; ++s) {
    vec = vec && aligned16(a.init[s]) && aligned16(a.state_out[s]) && aligned16(a.state_last[s]);
  }
  if constexpr (kVec > 1) {
    if (vec) {
      forward_kernel<S, M, kVec><<<grid_for(a.N / kVec, device), kThreads, 0, stream>>>(a, q);
      check_launch("the neuron forward kernel");
      return;
    }
  }
  forward_kernel<S, M, 1><<<grid_for(a.N, device), kThreads, 0, stream>>>(a, q);
  check_launch("the neuron forward kernel");
}

template <typename S, NeuronModel M>
void backward_launch(const BackwardArgs& a, const NeuronCoeffs<float>& q, Surrogate sg, int device,
                     cudaStream_t stream) {
  constexpr int kVec = M == NeuronModel::lif ? 16 / static_cast<int>(sizeof(S)) : 1;
  bool vec = kVec > 1 && a.N % kVec == 0 && aligned16(a.grad_spike) && aligned16(a.saved) && aligned16(a.grad_x) &&
             (!a.read_x || aligned16(a.x));
  for (int s = 0; s < kMaxStates; ++s) {
    vec = vec && aligned16(a.grad_out[s]) && aligned16(a.init[s]) && aligned16(a.grad_init[s]);
  }
  for (int s = 0; s < kMaxParams; ++s) vec = vec && aligned16(a.slot_ws[s]);
  const bool prev = neuron_reads_prev_state(M) || a.want_slot_grad;
  const Surrogate sgt = M == NeuronModel::ilif ? Surrogate::sigmoid : sg;
  dispatch_surrogate(sgt, [&](auto tag) {
    constexpr Surrogate SG = decltype(tag)::value;
    if constexpr (surrogate_allowed(M, SG)) {
      auto launch = [&](auto vc, auto pc) {
        constexpr int V = decltype(vc)::value;
        constexpr bool PREV = decltype(pc)::value;
        backward_kernel<S, M, SG, V, PREV><<<grid_for(a.N / V, device), kThreads, 0, stream>>>(a, q);
      };
      using VecT = std::integral_constant<int, kVec>;
      using One = std::integral_constant<int, 1>;
      // the plain LIF / alif / ilif / ternary never read the previous state; the snnTorch family and
      // norse_lif always
      if constexpr (neuron_reads_prev_state(M)) {
        launch(One{}, std::true_type{});
      } else if constexpr (M == NeuronModel::lif) {
        if (vec && prev) {
          launch(VecT{}, std::true_type{});
        } else if (vec) {
          launch(VecT{}, std::false_type{});
        } else if (prev) {
          launch(One{}, std::true_type{});
        } else {
          launch(One{}, std::false_type{});
        }
      } else {
        launch(One{}, std::false_type{});
      }
    }
  });
  check_launch("the neuron backward kernel");
}

// A state that starts at a constant (v_reset or 0) over zero steps.
template <typename S>
__global__ void fill_kernel(void* dst, int64_t n, float value) {
  const auto bits = StorageTraits<S>::from_float(value);
  for (int64_t i = first_group(); i < n; i += group_stride()) {
    static_cast<typename StorageTraits<S>::Bits*>(dst)[i] = bits;
  }
}

const void* data_of(const TensorView* t) {
  return t ? t->data : nullptr;
}
void* mdata_of(const TensorView* t) {
  return t ? t->data : nullptr;
}

size_t elem_size(DType d) {
  return d == DType::f32 ? 4 : 2;
}

}  // namespace

void neuron_forward_cuda(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                         const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                         const TensorView* const* state_last, const NeuronParams& p, const ExecConfig& ex) {
  // arguments checked by neuron_forward (csrc/core/neuron.cpp)
  constexpr const char* fn = "neuron_forward_cuda";
  require_cuda(&x, "x_seq", fn);
  require_cuda(&spike, "spike_seq", fn);
  require_cuda(saved, "saved", fn);
  for (int s = 0; s < kMaxStates; ++s) {
    require_cuda(state_init[s], "state_init", fn);
    require_cuda(state_out[s], "state_out", fn);
    require_cuda(state_last[s], "state_last", fn);
  }
  for (int s = 0; s < kMaxParams; ++s) require_cuda(slots[s], "slots", fn);
  check_cuda_dtype(x.dtype, "x_seq");
  if (p.N == 0) return;
  const DeviceGuard guard(x.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  const int ns = neuron_states(p.model);
  if (p.T == 0) {  // the returned last states are the initial ones
    const bool vr = !neuron_reads_prev_state(p.model) && p.hard_reset && p.model != NeuronModel::ilif;
    for (int s = 0; s < ns; ++s) {
      const TensorView* last = state_out[s] && state_out[s]->numel() == p.N ? state_out[s] : nullptr;
      for (const TensorView* dst : {last, state_last[s]}) {
        if (!dst) continue;
        const size_t bytes = static_cast<size_t>(p.N) * elem_size(x.dtype);
        if (state_init[s]) {
          check_cuda(cudaMemcpyAsync(dst->data, state_init[s]->data, bytes, cudaMemcpyDeviceToDevice, stream),
                     "cudaMemcpyAsync (state)");
        } else {
          const float value = s == 0 && vr ? static_cast<float>(p.v_reset) : 0.0f;
          dispatch_dtype(x.dtype, [&](auto tag) {
            using S = typename decltype(tag)::type;
            fill_kernel<S><<<grid_for(p.N, x.device_index), kThreads, 0, stream>>>(dst->data, p.N, value);
          });
          check_launch("the state fill kernel");
        }
      }
    }
    return;
  }
  ForwardArgs a{};
  a.x = x.data;
  for (int s = 0; s < kMaxStates; ++s) {
    a.init[s] = data_of(state_init[s]);
    a.state_out[s] = mdata_of(state_out[s]);
    a.state_last[s] = mdata_of(state_last[s]);
  }
  for (int s = 0; s < kMaxParams; ++s) {
    a.slots[s] = slots[s] ? slots[s]->ptr<const float>() : nullptr;
    a.C[s] = p.layout[s].C;
    a.S[s] = p.layout[s].S;
  }
  a.spike = spike.data;
  a.saved = mdata_of(saved);
  a.T = p.T;
  a.N = p.N;
  // T == 1: a sequence is the last state
  for (int s = 0; s < kMaxStates; ++s) a.seq[s] = state_out[s] && state_out[s]->numel() == p.T * p.N && p.T != 1;
  const NeuronCoeffs<float> q(p, slots[0] != nullptr);
  dispatch_model(p.model, [&](auto mtag) {
    constexpr NeuronModel M = decltype(mtag)::value;
    dispatch_dtype(x.dtype,
                   [&](auto tag) { forward_launch<typename decltype(tag)::type, M>(a, q, x.device_index, stream); });
  });
}

void neuron_backward_cuda(const TensorView& grad_spike, const TensorView* const* grad_state_out, const TensorView* x,
                          const TensorView* saved, const TensorView* const* state_init, const TensorView* const* slots,
                          const TensorView& grad_x, const TensorView* const* grad_state_init,
                          const TensorView* const* grad_slot_ws, const TensorView* const* grad_slots,
                          const NeuronParams& p, const ExecConfig& ex) {
  // arguments checked by neuron_backward (csrc/core/neuron.cpp)
  constexpr const char* fn = "neuron_backward_cuda";
  require_cuda(&grad_spike, "grad_spike", fn);
  require_cuda(x, "x_seq", fn);
  require_cuda(saved, "saved", fn);
  require_cuda(&grad_x, "grad_x", fn);
  for (int s = 0; s < kMaxStates; ++s) {
    require_cuda(grad_state_out[s], "grad_state_out", fn);
    require_cuda(state_init[s], "state_init", fn);
    require_cuda(grad_state_init[s], "grad_state_init", fn);
  }
  for (int s = 0; s < kMaxParams; ++s) {
    require_cuda(slots[s], "slots", fn);
    require_cuda(grad_slot_ws[s], "grad_slot_ws", fn);
    require_cuda(grad_slots[s], "grad_slots", fn);
  }
  check_cuda_dtype(grad_spike.dtype, "grad_spike");
  const bool run = p.T > 0 && p.N > 0;
  SF_CHECK_ARG(!run || saved,
               "saved values are required on CUDA (for recompute, run the forward into a workspace first)");
  const DeviceGuard guard(grad_spike.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  const int device = grad_spike.device_index;
  const int ns = neuron_states(p.model), nsl = neuron_slots(p.model);
  bool want_slot_grad = false;
  for (int s = 0; s < nsl; ++s) want_slot_grad = want_slot_grad || grad_slots[s] != nullptr;
  if (run) {
    BackwardArgs a{};
    a.grad_spike = grad_spike.data;
    for (int s = 0; s < kMaxStates; ++s) {
      a.grad_out[s] = data_of(grad_state_out[s]);
      a.init[s] = data_of(state_init[s]);
      a.grad_init[s] = mdata_of(grad_state_init[s]);
    }
    for (int s = 0; s < kMaxStates; ++s) {
      a.seq[s] = grad_state_out[s] && grad_state_out[s]->numel() == p.T * p.N && p.T != 1;
    }
    a.x = data_of(x);
    a.saved = data_of(saved);
    for (int s = 0; s < kMaxParams; ++s) {
      a.slots[s] = slots[s] ? slots[s]->ptr<const float>() : nullptr;
      a.C[s] = p.layout[s].C;
      a.S[s] = p.layout[s].S;
      a.slot_ws[s] = grad_slots[s] ? grad_slot_ws[s]->ptr<float>() : nullptr;
    }
    a.grad_x = grad_x.data;
    a.T = p.T;
    a.N = p.N;
    a.want_slot_grad = want_slot_grad;
    a.read_x = neuron_always_reads_x(p.model) || (want_slot_grad && neuron_backward_reads_x(p, slots[0] != nullptr));
    SF_CHECK_ARG(!a.read_x || x, "this neuron's backward needs x_seq");
    const NeuronCoeffs<float> q(p, slots[0] != nullptr);
    dispatch_model(p.model, [&](auto mtag) {
      constexpr NeuronModel M = decltype(mtag)::value;
      dispatch_dtype(grad_spike.dtype, [&](auto tag) {
        backward_launch<typename decltype(tag)::type, M>(a, q, p.surrogate, device, stream);
      });
    });
  } else if (p.N > 0) {
    // T == 0: the returned states are the initial ones, so their gradients pass straight through.
    const size_t bytes = static_cast<size_t>(p.N) * elem_size(grad_spike.dtype);
    for (int s = 0; s < ns; ++s) {
      if (!grad_state_init[s]) continue;
      const TensorView* g = grad_state_out[s];
      if (g && g->numel() == p.N) {
        check_cuda(cudaMemcpyAsync(grad_state_init[s]->data, g->data, bytes, cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpyAsync (grad_state_init)");
      } else {
        check_cuda(cudaMemsetAsync(grad_state_init[s]->data, 0, bytes, stream), "cudaMemsetAsync (grad_state_init)");
      }
    }
  }
  for (int s = 0; s < nsl; ++s) {
    if (!grad_slots[s]) continue;
    if (run) {
      reduce_slot_grad(grad_slot_ws[s]->ptr<const float>(), grad_slots[s]->ptr<float>(), p.layout[s], p.N, device,
                       stream);
    } else {
      check_cuda(cudaMemsetAsync(grad_slots[s]->data, 0, static_cast<size_t>(p.layout[s].C) * sizeof(float), stream),
                 "cudaMemsetAsync (grad_slots)");
    }
  }
}

}  // namespace spikeforge
