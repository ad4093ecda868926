// Argument checks of the spike-propagation family, shared by the CPU and CUDA entry points.
#include "spike.h"

#include <string>

#include "index.h"

namespace spikeforge {
namespace {

void check_float(const TensorView& t, const char* name) {
  SF_CHECK_ARG(t.dtype == DType::f32 || t.dtype == DType::f64,
               std::string(name) + " must be float32 or float64, got " + dtype_name(t.dtype));
  if (t.device == DeviceKind::cuda) {
    SF_CHECK_ARG(t.dtype == DType::f32, std::string(name) + ": CUDA kernels take float32");
  }
}

void check_shape(const TensorView& t, std::initializer_list<int64_t> shape, const char* name) {
  SF_CHECK_ARG(
      t.ndim == static_cast<int>(shape.size()),
      std::string(name) + " must have " + std::to_string(shape.size()) + " dimensions, got " + std::to_string(t.ndim));
  int i = 0;
  for (int64_t d : shape) {
    SF_CHECK_ARG(t.shape[i] == d, std::string(name) + ": dimension " + std::to_string(i) + " is " +
                                      std::to_string(t.shape[i]) + ", expected " + std::to_string(d));
    ++i;
  }
  check_dense(t, name);
}

void check_like(const TensorView& ref, const TensorView& t, const char* rn, const char* name) {
  check_same_device(ref, t, rn, name);
  check_same_dtype(ref, t, rn, name);
  check_dense(t, name);
}

void check_bits(const TensorView& bits, int64_t R, int64_t K, const TensorView& ref, const char* rn,
                const char* name = "bits") {
  SF_CHECK_ARG(bits.dtype == DType::i64, std::string(name) + " must be int64");
  check_same_device(ref, bits, rn, name);
  check_shape(bits, {R, spike_words(K)}, name);
}

// the CUDA non-finite flag workspace: int64 [1] on the device of ref
void check_flag(const TensorView* flag, const TensorView& ref, const char* rn) {
  if (!flag) return;
  SF_CHECK_ARG(flag->dtype == DType::i64, "nonfinite must be int64");
  check_same_device(ref, *flag, rn, "nonfinite");
  check_shape(*flag, {1}, "nonfinite");
}

// exactly one of bits / s: the saved input of a backward; signs only with bits
void check_saved(const TensorView* bits, const TensorView* signs, const TensorView* s, int64_t R, int64_t K,
                 const TensorView& grad, const char* gn) {
  SF_CHECK_ARG((bits != nullptr) != (s != nullptr), "pass exactly one of bits (packed input) and s (values)");
  SF_CHECK_ARG(signs == nullptr || bits != nullptr, "signs go with bits (packed ternary input), not with values");
  if (bits) {
    check_bits(*bits, R, K, grad, gn);
    if (signs) check_bits(*signs, R, K, grad, gn, "signs");
  } else {
    check_like(grad, *s, gn, "s");
    check_numel(*s, R * K, "s");
  }
}

}  // namespace

void check_spike_pack_args(const TensorView& s, const TensorView& bits, const TensorView& info,
                           const TensorView* signs) {
  check_float(s, "s");
  check_dense(s, "s");
  SF_CHECK_ARG(s.ndim == 2, "s must be 2-D [R, K]");
  check_bits(bits, s.shape[0], s.shape[1], s, "s");
  if (signs) check_bits(*signs, s.shape[0], s.shape[1], s, "s", "signs");
  SF_CHECK_ARG(info.dtype == DType::i64, "info must be int64");
  check_same_device(s, info, "s", "info");
  check_shape(info, {2}, "info");
}

void check_spike_unpack_args(const TensorView& bits, const TensorView* signs, const TensorView& out) {
  check_float(out, "out");
  SF_CHECK_ARG(out.ndim == 2, "out must be 2-D [R, K]");
  check_dense(out, "out");
  check_bits(bits, out.shape[0], out.shape[1], out, "out");
  if (signs) check_bits(*signs, out.shape[0], out.shape[1], out, "out", "signs");
}

void check_spike_linear_forward_args(const TensorView& s, const TensorView& w, const TensorView* bias,
                                     const TensorView& y, const TensorView* wt, const TensorView* nonfinite) {
  check_float(s, "s");
  SF_CHECK_ARG(s.ndim == 2 && w.ndim == 2, "s and weight must be 2-D");
  const int64_t M = s.shape[0], K = s.shape[1], N = w.shape[0];
  check_dense(s, "s");
  check_like(s, w, "s", "weight");
  check_shape(w, {N, K}, "weight");
  if (bias) {
    check_like(s, *bias, "s", "bias");
    check_shape(*bias, {N}, "bias");
  }
  check_like(s, y, "s", "out");
  check_shape(y, {M, N}, "out");
  if (wt) {
    check_like(s, *wt, "s", "wt");
    check_shape(*wt, {K, N}, "wt");
  }
  check_flag(nonfinite, s, "s");
  SF_CHECK_ARG(K < (int64_t(1) << 31), "s: rows longer than 2^31 elements are not supported");
}

void check_spike_linear_grad_weight_args(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                         const TensorView& grad_y, const TensorView& grad_w, const TensorView* ws) {
  check_float(grad_y, "grad_out");
  SF_CHECK_ARG(grad_y.ndim == 2 && grad_w.ndim == 2, "grad_out and grad_weight must be 2-D");
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = grad_w.shape[1];
  check_dense(grad_y, "grad_out");
  check_like(grad_y, grad_w, "grad_out", "grad_weight");
  check_shape(grad_w, {N, K}, "grad_weight");
  check_saved(bits, signs, s, M, K, grad_y, "grad_out");
  if (ws) {
    check_like(grad_y, *ws, "grad_out", "ws");
    check_shape(*ws, {K, N}, "ws");
  }
  SF_CHECK_ARG(M < (int64_t(1) << 31) && K < (int64_t(1) << 31), "s: more than 2^31 rows or columns");
}

void check_spike_linear_grad_input_masked_args(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                               const TensorView& grad_s, const TensorView* ws,
                                               const TensorView* nonfinite) {
  check_float(grad_y, "grad_out");
  SF_CHECK_ARG(grad_y.ndim == 2 && w.ndim == 2, "grad_out and weight must be 2-D");
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = w.shape[1];
  check_dense(grad_y, "grad_out");
  check_like(grad_y, w, "grad_out", "weight");
  check_shape(w, {N, K}, "weight");
  check_like(grad_y, grad_s, "grad_out", "grad_s");
  check_shape(grad_s, {M, K}, "grad_s");
  SF_CHECK_ARG(mask.dtype == DType::i64, "grad_mask bits must be int64");
  check_same_device(grad_y, mask, "grad_out", "grad_mask bits");
  check_shape(mask, {M, spike_words(K)}, "grad_mask bits");
  if (ws) {
    check_like(grad_y, *ws, "grad_out", "ws");
    check_shape(*ws, {K, N}, "ws");
  }
  check_flag(nonfinite, grad_y, "grad_out");
  SF_CHECK_ARG(M < (int64_t(1) << 31) && K < (int64_t(1) << 31), "grad_s: more than 2^31 rows or columns");
}

void check_spike_conv2d_params(const SpikeConvParams& p) {
  SF_CHECK_ARG(p.B >= 0 && p.Cin >= 1 && p.H >= 0 && p.W >= 0 && p.Cout >= 1 && p.kh >= 1 && p.kw >= 1,
               "spike_conv2d: bad sizes");
  SF_CHECK_ARG(p.stride_h >= 1 && p.stride_w >= 1, "stride must be >= 1");
  SF_CHECK_ARG(p.pad_h >= 0 && p.pad_w >= 0, "padding must be >= 0");
  SF_CHECK_ARG(p.dil_h >= 1 && p.dil_w >= 1, "dilation must be >= 1");
  SF_CHECK_ARG(p.groups >= 1 && p.Cin % p.groups == 0 && p.Cout % p.groups == 0,
               "groups must divide in_channels and out_channels");
  // every size, stride, padding and dilation below 2^31, so that the geometry below cannot overflow int64
  // (a padding of 2^63 - 1 wrapped the output-size check into a match)
  constexpr int64_t kLimit = int64_t(1) << 31;
  for (int64_t v :
       {p.Cin, p.H, p.W, p.Cout, p.kh, p.kw, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.Ho, p.Wo}) {
    SF_CHECK_ARG(v < kLimit, "spike_conv2d: a size, stride, padding or dilation of 2^31 or more");
  }
  const int64_t eh = p.dil_h * (p.kh - 1) + 1, ew = p.dil_w * (p.kw - 1) + 1;
  SF_CHECK_ARG(p.Ho == (p.H + 2 * p.pad_h - eh) / p.stride_h + 1 && p.Ho >= 1 &&
                   p.Wo == (p.W + 2 * p.pad_w - ew) / p.stride_w + 1 && p.Wo >= 1,
               "spike_conv2d: output size does not match the input, kernel, stride, padding and dilation");
  SF_CHECK_ARG(checked_mul(checked_mul(p.Cin, p.H, "spike_conv2d input"), p.W, "spike_conv2d input") < kLimit &&
                   checked_mul(checked_mul(p.Cout, p.Ho, "spike_conv2d output"), p.Wo, "spike_conv2d output") < kLimit,
               "spike_conv2d: a sample has more than 2^31 elements");
}

void check_spike_conv2d_forward_args(const TensorView& s, const TensorView& w, const TensorView* bias,
                                     const TensorView& y, const TensorView* wt, const TensorView* masks,
                                     const SpikeConvParams& p) {
  check_spike_conv2d_params(p);
  check_float(s, "s");
  check_shape(s, {p.B, p.Cin, p.H, p.W}, "s");
  check_like(s, w, "s", "weight");
  check_shape(w, {p.Cout, p.Cin / p.groups, p.kh, p.kw}, "weight");
  if (bias) {
    check_like(s, *bias, "s", "bias");
    check_shape(*bias, {p.Cout}, "bias");
  }
  check_like(s, y, "s", "out");
  check_shape(y, {p.B, p.Cout, p.Ho, p.Wo}, "out");
  if (wt) {
    check_like(s, *wt, "s", "wt");
    check_shape(*wt, {p.Cin / p.groups * p.kh * p.kw, p.Cout}, "wt");
  }
  if (masks) {
    SF_CHECK_ARG(masks->dtype == DType::i64, "masks must be int64");
    check_same_device(s, *masks, "s", "masks");
    check_shape(*masks, {p.B, p.H, p.W, spike_words(p.Cin)}, "masks");
  }
}

void check_spike_conv2d_grad_weight_args(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                         const TensorView& grad_y, const TensorView& grad_w, const TensorView* gyt,
                                         const TensorView* ws, const SpikeConvParams& p) {
  check_spike_conv2d_params(p);
  check_float(grad_y, "grad_out");
  check_shape(grad_y, {p.B, p.Cout, p.Ho, p.Wo}, "grad_out");
  check_like(grad_y, grad_w, "grad_out", "grad_weight");
  check_shape(grad_w, {p.Cout, p.Cin / p.groups, p.kh, p.kw}, "grad_weight");
  check_saved(bits, signs, s, p.B, p.Cin * p.H * p.W, grad_y, "grad_out");
  if (gyt) {
    check_like(grad_y, *gyt, "grad_out", "gyt");
    check_shape(*gyt, {p.B, p.Ho, p.Wo, p.Cout}, "gyt");
  }
  if (ws) {
    check_like(grad_y, *ws, "grad_out", "ws");
    check_shape(*ws, {spike_conv2d_wgrad_chunks(p.B), p.Cin * p.kh * p.kw, p.Cout / p.groups}, "ws");
  }
}

}  // namespace spikeforge
