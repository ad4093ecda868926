// CUDA kernels of spike_conv2d (csrc/core/spike.h).
//
// conv2d forward: each input pixel's active channels are first packed into per-pixel bit masks
//   (masks [B, H, W, words(Cin)], one coalesced pass over s) and W is transposed into wt
//   [Cin/g * kh * kw, Cout] (one tap's weights for all output channels contiguous). A block owns 32
//   consecutive output positions of one sample and 64 output channels of one group: a warp takes a
//   position, walks its taps, and for each tap iterates the set bits of the input pixel's mask (the
//   same for every lane: no divergence), each lane adding v * wt[ci, tap, its 2 channels] (coalesced),
//   4 events' loads in flight at a time. Work per output is the number of active inputs in its
//   receptive field, not Cin * kh * kw. The block's 32 x 64 results are staged in shared memory and
//   written as 64 coalesced rows.
// conv2d grad_weight: a block owns input channel ci, up to 1024 (tap, output channel) pairs of its weight
//   rows and a chunk of the samples (spike_conv2d_wgrad_chunks: a function of B alone); it compacts the
//   channel's active inputs once (bits or values, as for linear) and for each event adds v times the
//   gradient of the output position each tap maps it onto, read from grad_y transposed to channels-last
//   (gyt [B, Ho, Wo, Cout]: consecutive threads, consecutive channels). Per-chunk partials (ws), summed
//   over the chunks in order, then transposed into grad_w. Fixed order, no atomics.
// Non-finite values: fix-up kernels (see conv_forward_nonfinite_kernel) write the NaN of the zero
//   products the event kernels skip.
#include "cuda/spike_common_cuda.cuh"

namespace spikeforge {
namespace {

struct ConvDev {
  int64_t B, Cin, H, W, Cout, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw, groups;
};
ConvDev to_dev(const SpikeConvParams& p) {
  return ConvDev{p.B,  p.Cin,      p.H,        p.W,     p.Cout,  p.kh,    p.kw,    p.Ho,
                 p.Wo, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups};
}

// masks[b, y, x, word] bit j = (s[b, 64 word + j, y, x] != 0): one thread per (b, word, pixel), pixels
// fastest (each of its up to 64 channel loads is coalesced across the warp).
__global__ void conv_masks_kernel(const float* __restrict__ s, int64_t* __restrict__ masks, int64_t B, int64_t Cin,
                                  int64_t HW) {
  const int64_t nwc = spike_words(Cin), total = B * nwc * HW;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pix = i % HW, wd = (i / HW) % nwc, b = i / (HW * nwc);
    const int64_t c0 = wd * 64;
    const int nc = static_cast<int>(Cin - c0 < 64 ? Cin - c0 : int64_t(64));
    const float* sp = s + (b * Cin + c0) * HW + pix;
    uint64_t m = 0;
    for (int j = 0; j < nc; ++j) m |= static_cast<uint64_t>(sp[j * HW] != 0.0f) << j;  // NaN counts as active
    masks[(b * HW + pix) * nwc + wd] = static_cast<int64_t>(m);
  }
}

constexpr int kConvPos = 32;               // output positions per forward block (one sample)
constexpr int kConvLaneCo = 2;             // output channels per lane (lane, lane + 32)
constexpr int kConvCo = 32 * kConvLaneCo;  // output channels per forward block
constexpr int kConvBatch = 4;              // events whose loads are issued together (latency overlap)

// See the file comment. Grid: B * tiles * groups * chunks blocks (tiles = ceil(Ho*Wo / 32) per sample,
// chunks = ceil((Cout/g) / 64) per group); the blocks of one (sample, tile) are consecutive (they read the
// same masks and inputs).
__global__ void __launch_bounds__(kBlock)
    conv_forward_kernel(const float* __restrict__ s, const int64_t* __restrict__ masks, const float* __restrict__ wt,
                        const float* __restrict__ bias, float* __restrict__ y, ConvDev p, int64_t tiles,
                        int64_t chunks) {
  __shared__ float out_tile[kConvCo][kConvPos + 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t HW = p.H * p.W, HoWo = p.Ho * p.Wo, taps = p.kh * p.kw, nwc = spike_words(p.Cin);
  const int64_t blk = blockIdx.x, per_tile = chunks * p.groups;
  const int64_t bt = blk / per_tile, gc = blk - bt * per_tile;
  const int64_t b = bt / tiles, q0 = (bt - b * tiles) * kConvPos;
  const int64_t g = gc / chunks, col0 = (gc - g * chunks) * kConvCo;
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups;
  // this lane's output channels (a lane past the group's last channel computes a discarded copy of col0's)
  int64_t co[kConvLaneCo];
#pragma unroll
  for (int c = 0; c < kConvLaneCo; ++c) {
    const int64_t col = col0 + lane + 32 * c;
    co[c] = g * cout_g + (col < cout_g ? col : col0);
  }
  const int64_t c_lo = g * cin_g, c_hi = c_lo + cin_g;  // the group's input channels [c_lo, c_hi)
  const int64_t w_lo = c_lo >> 6, w_hi = (c_hi - 1) >> 6;
  const uint64_t m_lo = ~uint64_t(0) << (c_lo & 63);
  const uint64_t m_hi = (c_hi & 63) ? ~uint64_t(0) >> (64 - (c_hi & 63)) : ~uint64_t(0);
  const int64_t ci_step = taps * p.Cout;  // wt rows of consecutive input channels, same tap
  const float* s_b = s + b * p.Cin * HW;
  const int64_t* masks_b = masks + b * HW * nwc;
  for (int i = warp; i < kConvPos; i += kWarps) {
    const int64_t q = q0 + i;
    float acc[kConvLaneCo] = {};
    if (q < HoWo) {
      const int64_t oy = q / p.Wo, ox = q - oy * p.Wo;
      for (int64_t ky = 0; ky < p.kh; ++ky) {
        const int64_t yy = oy * p.sh - p.ph + ky * p.dh;
        if (yy < 0 || yy >= p.H) continue;
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          const int64_t xx = ox * p.sw - p.pw + kx * p.dw;
          if (xx < 0 || xx >= p.W) continue;
          const int64_t pix = yy * p.W + xx;
          const int64_t* mrow = masks_b + pix * nwc;
          const float* wtap = wt + (ky * p.kw + kx) * p.Cout;  // + (ci - c_lo) * ci_step + co
          for (int64_t wd = w_lo; wd <= w_hi; ++wd) {
            uint64_t m = static_cast<uint64_t>(mrow[wd]);  // one address for the whole warp
            if (wd == w_lo) m &= m_lo;
            if (wd == w_hi) m &= m_hi;
            while (m) {
              // up to kConvBatch active channels (the same for every lane: no divergence), their loads
              // first, then the additions in channel order (the sum order does not depend on the batching)
              int64_t ci[kConvBatch];
              int n = 0;
#pragma unroll
              for (int e = 0; e < kConvBatch; ++e) {
                ci[e] = wd * 64 + (m ? __ffsll(static_cast<long long>(m)) - 1 : 0);
                n += m != 0;
                m &= m - 1;
              }
              float v[kConvBatch], wv[kConvBatch][kConvLaneCo];
#pragma unroll
              for (int e = 0; e < kConvBatch; ++e) {
                v[e] = e < n ? s_b[ci[e] * HW + pix] : 0.0f;
#pragma unroll
                for (int c = 0; c < kConvLaneCo; ++c) wv[e][c] = e < n ? wtap[(ci[e] - c_lo) * ci_step + co[c]] : 0.0f;
              }
#pragma unroll
              for (int e = 0; e < kConvBatch; ++e) {
                if (e < n) {
#pragma unroll
                  for (int c = 0; c < kConvLaneCo; ++c) acc[c] = fmaf(v[e], wv[e][c], acc[c]);
                }
              }
            }
          }
        }
      }
    }
#pragma unroll
    for (int c = 0; c < kConvLaneCo; ++c) out_tile[lane + 32 * c][i] = acc[c];
  }
  __syncthreads();
  // row r of the tile is channel col0 + r over the block's 32 consecutive positions: coalesced stores
  for (int r = warp; r < kConvCo; r += kWarps) {
    const int64_t col = col0 + r, q = q0 + lane;
    if (col < cout_g && q < HoWo) {
      const int64_t c = g * cout_g + col;
      y[(b * p.Cout + c) * HoWo + q] = out_tile[r][lane] + (bias ? bias[c] : 0.0f);
    }
  }
}

// Input channel ci over samples [b0, ...): element e = (b - b0) * H*W + pixel, from the packed bits (with
// the sign words of ternary input, or null) or the values.
struct ConvPlane {
  const int64_t* bits;
  const int64_t* signs;
  const float* s;
  int64_t HW, K, nwords, b0, ci;  // K = Cin * H * W (a sample), nwords = words(K)
  __device__ __forceinline__ float get(int64_t e) const {
    const int64_t bl = e / HW, k = ci * HW + (e - bl * HW), b = b0 + bl;
    if (bits) return spike_value(bits + b * nwords, signs ? signs + b * nwords : nullptr, k);
    return s[b * K + k];
  }
};

// Block (ci, pair chunk, sample chunk z): a thread owns up to kPerThread (tap, co) pairs of ci's row of the
// weight gradient (pair j = tap * cout_g + co: consecutive threads read consecutive channels of gyt). It
// compacts the active inputs of channel ci in the sample chunk (once for all taps), and for each event
// (b, y, x) with value v adds v * gyt[b, oy, ox, co] where the tap maps the input onto an output position
// (oy = (y + pad - ky * dil) / stride, exact and in range), kConvBatch events' loads in flight at a time.
// Events in increasing order: a fixed sum per chunk; partials[z, ci * taps + tap, co], summed over z in
// order by conv_wgrad_reduce_kernel.
__global__ void __launch_bounds__(kBlock)
    conv_grad_weight_kernel(const int64_t* __restrict__ bits, const int64_t* __restrict__ signs,
                            const float* __restrict__ s, const float* __restrict__ gyt, float* __restrict__ partials,
                            ConvDev p, int64_t nz) {
  __shared__ int idx[kChunk];
  __shared__ float val[kChunk];
  __shared__ int piece_off[kPieces + 1];
  const int64_t ci = blockIdx.x, z = blockIdx.z;
  // a sample has < 2^31 elements (check_spike_conv2d_params): positions and pixels fit in int
  const int W = static_cast<int>(p.W), Ho = static_cast<int>(p.Ho), Wo = static_cast<int>(p.Wo),
            sh = static_cast<int>(p.sh), sw = static_cast<int>(p.sw);
  const int64_t HW = p.H * p.W, HoWo = p.Ho * p.Wo, taps = p.kh * p.kw;
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, pairs = taps * cout_g;
  // samples [z B / nz, (z + 1) B / nz): nz <= B chunks of B / nz or B / nz + 1 samples, none empty
  const int64_t b0 = z * p.B / nz, nb = (z + 1) * p.B / nz - b0;
  const float* gy_g = gyt + (ci / cin_g) * cout_g;  // ci's group's channels of gyt
  bool on[kPerThread];
  int64_t co[kPerThread], row[kPerThread];
  int dy[kPerThread], dx[kPerThread];  // oy * stride = y + dy
#pragma unroll
  for (int q = 0; q < kPerThread; ++q) {
    const int64_t j = static_cast<int64_t>(blockIdx.y) * kCols + threadIdx.x + q * kBlock;
    on[q] = j < pairs;
    const int64_t tap = on[q] ? j / cout_g : 0;
    co[q] = on[q] ? j - tap * cout_g : 0;
    row[q] = ci * taps + tap;
    const int64_t ky = tap / p.kw, kx = tap - ky * p.kw;
    dy[q] = static_cast<int>(p.ph - ky * p.dh);
    dx[q] = static_cast<int>(p.pw - kx * p.dw);
  }
  float acc[kPerThread] = {};
  const int64_t K = p.Cin * HW;
  const ConvPlane src{bits, signs, s, HW, K, spike_words(K), b0, ci};
  const int64_t n_src = nb * HW;
  for (int64_t e0 = 0; e0 < n_src; e0 += kChunk) {
    const int n = static_cast<int>(n_src - e0 < kChunk ? n_src - e0 : int64_t(kChunk));
    const int count = compact(src, e0, n, idx, val, piece_off);
    for (int j0 = 0; j0 < count; j0 += kConvBatch) {
      bool has[kConvBatch];
      int ey[kConvBatch], ex[kConvBatch];
      int64_t ebase[kConvBatch];  // the event's sample's first row of gyt
      float ev[kConvBatch];
#pragma unroll
      for (int e = 0; e < kConvBatch; ++e) {
        has[e] = j0 + e < count;
        const int64_t el = e0 + (has[e] ? idx[j0 + e] : 0);
        const int64_t bl = el / HW;
        const int pix = static_cast<int>(el - bl * HW);
        ey[e] = pix / W;
        ex[e] = pix - ey[e] * W;
        ebase[e] = (b0 + bl) * HoWo;
        ev[e] = has[e] ? val[j0 + e] : 0.0f;
      }
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        bool hit[kConvBatch];
        float gv[kConvBatch];
#pragma unroll
        for (int e = 0; e < kConvBatch; ++e) {
          const int ty = ey[e] + dy[q], tx = ex[e] + dx[q];
          const int oy = ty / sh, ox = tx / sw;
          hit[e] = on[q] && has[e] && ty >= 0 && tx >= 0 && oy * sh == ty && ox * sw == tx && oy < Ho && ox < Wo;
          gv[e] = hit[e] ? gy_g[(ebase[e] + static_cast<int64_t>(oy) * Wo + ox) * p.Cout + co[q]] : 0.0f;
        }
#pragma unroll
        for (int e = 0; e < kConvBatch; ++e)
          if (hit[e]) acc[q] = fmaf(ev[e], gv[e], acc[q]);  // skipped, not v * 0: a non-finite v stays out
      }
    }
    __syncthreads();  // the list is rewritten by the next round
  }
  const int64_t rows = p.Cin * taps;
#pragma unroll
  for (int q = 0; q < kPerThread; ++q)
    if (on[q]) partials[(z * rows + row[q]) * cout_g + co[q]] = acc[q];
}

// partials[0, i] = sum over z of partials[z, i], z in increasing order (in place: element i is read and
// written by one thread only).
__global__ void conv_wgrad_reduce_kernel(float* __restrict__ partials, int64_t n, int64_t nz) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = partials[i];
    for (int64_t z = 1; z < nz; ++z) sum += partials[z * n + i];
    partials[i] = sum;
  }
}

// ---- non-finite values (csrc/core/spike.h; padding counts as zeros, as csrc/cpu/spike_conv2d_kernels_cpu.h) ----
// The event kernels skip the zero inputs, and the padding, that the dense convolution multiplies: these
// fix-up kernels write the NaN of those products. A thread per weight (forward: W is small) or per grad_y
// value (grad_weight) checks it; only a non-finite one costs a loop over the output positions it meets.

// Input element (iy, ix) that tap (ky, kx) reads for output position (oy, ox); false for the padding.
__device__ __forceinline__ bool tap_input(const ConvDev& p, int64_t oy, int64_t ox, int64_t ky, int64_t kx, int64_t& iy,
                                          int64_t& ix) {
  iy = oy * p.sh - p.ph + ky * p.dh;
  ix = ox * p.sw - p.pw + kx * p.dw;
  return iy >= 0 && iy < p.H && ix >= 0 && ix < p.W;
}

// y[b, co, oy, ox] = NaN where a non-finite w[co, cl, ky, kx] meets a zero input or the padding.
__global__ void conv_forward_nonfinite_kernel(const float* __restrict__ w, const float* __restrict__ s,
                                              float* __restrict__ y, ConvDev p) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, taps = p.kh * p.kw;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.Cout * cin_g * taps;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (isfinite(w[i])) continue;
    const int64_t tap = i % taps, cl = (i / taps) % cin_g, co = i / (taps * cin_g);
    const int64_t ky = tap / p.kw, kx = tap - ky * p.kw, ci = co / cout_g * cin_g + cl;
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t oy = 0; oy < p.Ho; ++oy)
        for (int64_t ox = 0; ox < p.Wo; ++ox) {
          int64_t iy, ix;
          if (!tap_input(p, oy, ox, ky, kx, iy, ix) || s[((b * p.Cin + ci) * p.H + iy) * p.W + ix] == 0.0f)
            y[((b * p.Cout + co) * p.Ho + oy) * p.Wo + ox] = spike_nan();
        }
  }
}

// Before the partial sums are transposed into grad_w: ws0[ci * taps + tap, co - g * cout_g] = NaN where a
// non-finite grad_y[b, co, oy, ox] meets a zero input (packed bits or values) or the padding.
__global__ void conv_grad_weight_nonfinite_kernel(const int64_t* __restrict__ bits, const float* __restrict__ s,
                                                  const float* __restrict__ gy, float* __restrict__ ws0, ConvDev p) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, taps = p.kh * p.kw, HoWo = p.Ho * p.Wo;
  const int64_t K = p.Cin * p.H * p.W, nwords = spike_words(K);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.B * p.Cout * HoWo;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (isfinite(gy[i])) continue;
    const int64_t q = i % HoWo, co = (i / HoWo) % p.Cout, b = i / (HoWo * p.Cout);
    const int64_t oy = q / p.Wo, ox = q - oy * p.Wo, g = co / cout_g;
    for (int64_t cl = 0; cl < cin_g; ++cl) {
      const int64_t ci = g * cin_g + cl;
      for (int64_t tap = 0; tap < taps; ++tap) {
        int64_t iy, ix;
        bool zero = !tap_input(p, oy, ox, tap / p.kw, tap % p.kw, iy, ix);
        if (!zero) {
          const int64_t k = (ci * p.H + iy) * p.W + ix;
          zero = bits ? spike_bit(bits + b * nwords, k) == 0 : s[b * K + k] == 0.0f;
        }
        if (zero) ws0[(ci * taps + tap) * cout_g + (co - g * cout_g)] = spike_nan();
      }
    }
  }
}

}  // namespace

void spike_conv2d_forward_cuda(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                               const TensorView* wt, const TensorView* masks, const SpikeConvParams& p,
                               const ExecConfig& ex) {
  check_spike_conv2d_forward_args(s, w, bias, y, wt, masks, p);
  require_all_cuda({&s, &w, bias, &y, wt, masks}, "spike_conv2d_forward_cuda");
  SF_CHECK_ARG(wt != nullptr && masks != nullptr, "wt, masks: the CUDA conv forward needs both workspaces");
  if (p.B == 0) return;  // check_spike_conv2d_params: every other size is >= 1
  const int64_t tiles = (p.Ho * p.Wo + kConvPos - 1) / kConvPos;
  const int64_t chunks = (p.Cout / p.groups + kConvCo - 1) / kConvCo;
  const int64_t blocks = p.B * tiles * p.groups * chunks;
  SF_CHECK_ARG(blocks <= 0x7fffffff, "spike_conv2d: too many output positions and channels for one CUDA launch");
  const DeviceGuard guard(s.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  const int64_t taps = p.kh * p.kw, HW = p.H * p.W;
  transpose(w.ptr<const float>(), wt->ptr<float>(), p.Cout, p.Cin / p.groups * taps, stream);
  conv_masks_kernel<<<grid_1d(p.B * spike_words(p.Cin) * HW, s.device_index), kBlock, 0, stream>>>(
      s.ptr<const float>(), masks->ptr<int64_t>(), p.B, p.Cin, HW);
  check_launch("spike conv_masks_kernel");
  conv_forward_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(
      s.ptr<const float>(), masks->ptr<const int64_t>(), wt->ptr<const float>(),
      bias ? bias->ptr<const float>() : nullptr, y.ptr<float>(), to_dev(p), tiles, chunks);
  check_launch("spike conv_forward_kernel");
  conv_forward_nonfinite_kernel<<<grid_1d(w.numel(), s.device_index), kBlock, 0, stream>>>(
      w.ptr<const float>(), s.ptr<const float>(), y.ptr<float>(), to_dev(p));
  check_launch("spike conv_forward_nonfinite_kernel");
}

void spike_conv2d_grad_weight_cuda(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                   const TensorView& grad_y, const TensorView& grad_w, const TensorView* gyt,
                                   const TensorView* ws, const SpikeConvParams& p, const ExecConfig& ex) {
  check_spike_conv2d_grad_weight_args(bits, signs, s, grad_y, grad_w, gyt, ws, p);
  require_all_cuda({bits, signs, s, &grad_y, &grad_w, gyt, ws}, "spike_conv2d_grad_weight_cuda");
  SF_CHECK_ARG(gyt != nullptr && ws != nullptr, "gyt, ws: the CUDA conv grad_weight needs both workspaces");
  const int64_t taps = p.kh * p.kw, cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups;
  const int64_t pair_chunks = (taps * cout_g + kCols - 1) / kCols;
  SF_CHECK_ARG(pair_chunks <= 65535 && p.Cin <= 0x7fffffff,
               "spike_conv2d: too many channels or output channels x taps per group for one CUDA launch");
  // the kernel maps input pixels to output positions in int arithmetic (y + pad - ky * dil)
  SF_CHECK_ARG(p.stride_h < (1 << 30) && p.stride_w < (1 << 30) && p.H + p.pad_h < (1 << 30) &&
                   p.W + p.pad_w < (1 << 30) && p.dil_h * p.kh < (1 << 30) && p.dil_w * p.kw < (1 << 30),
               "spike_conv2d: stride, padded input or dilated kernel of 2^30 or more");
  const DeviceGuard guard(grad_y.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  if (p.B == 0) {  // no positions: the gradient is zero
    check_cuda(cudaMemsetAsync(grad_w.data, 0, grad_w.numel() * sizeof(float), stream), "cudaMemsetAsync (grad_w)");
    return;
  }
  // grad_y [B, Cout, Ho*Wo] -> gyt [B, Ho*Wo, Cout]: a position's gradients over the channels contiguous
  transpose(grad_y.ptr<const float>(), gyt->ptr<float>(), p.Cout, p.Ho * p.Wo, stream, p.B);
  const int64_t nz = spike_conv2d_wgrad_chunks(p.B);
  const dim3 grid(static_cast<unsigned>(p.Cin), static_cast<unsigned>(pair_chunks), static_cast<unsigned>(nz));
  conv_grad_weight_kernel<<<grid, kBlock, 0, stream>>>(
      bits ? bits->ptr<const int64_t>() : nullptr, signs ? signs->ptr<const int64_t>() : nullptr,
      s ? s->ptr<const float>() : nullptr, gyt->ptr<const float>(), ws->ptr<float>(), to_dev(p), nz);
  check_launch("spike conv_grad_weight_kernel");
  const int64_t n = p.Cin * taps * cout_g;
  conv_wgrad_reduce_kernel<<<grid_1d(n, grad_y.device_index), kBlock, 0, stream>>>(ws->ptr<float>(), n, nz);
  check_launch("spike conv_wgrad_reduce_kernel");
  conv_grad_weight_nonfinite_kernel<<<grid_1d(grad_y.numel(), grad_y.device_index), kBlock, 0, stream>>>(
      bits ? bits->ptr<const int64_t>() : nullptr, s ? s->ptr<const float>() : nullptr, grad_y.ptr<const float>(),
      ws->ptr<float>(), to_dev(p));
  check_launch("spike conv_grad_weight_nonfinite_kernel");
  // ws[0] [groups][cin_g * taps][cout_g] -> grad_w [groups][cout_g][cin_g * taps] = [Cout, cin_g, kh, kw]
  transpose(ws->ptr<const float>(), grad_w.ptr<float>(), cin_g * taps, cout_g, stream, p.groups);
}

}  // namespace spikeforge
