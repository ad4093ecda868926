// Unit tests of the 64-bit index helpers (csrc/core/index.h) and of the native argument checks at sizes
// past 2^31 and near INT64_MAX. Views here carry shapes but no memory: the checks only read sizes,
// so element counts far beyond this machine's memory cost nothing. Built and run by
// tests/test_index_cpp.py with the system C++ compiler; prints "ALL PASSED" and exits 0 on success.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "core/index.h"
#include "core/neuron.h"
#include "core/psn.h"
#include "core/tensor_view.h"

using namespace spikeforge;

// The entry points of csrc/core/neuron.cpp route to the device kernels, which this test does not link:
// it exercises the argument checks only, so the CPU implementations are stubs here.
namespace spikeforge {
void neuron_forward_cpu(const TensorView&, const TensorView* const*, const TensorView* const*, const TensorView&,
                        const TensorView* const*, const TensorView*, const TensorView* const*, const NeuronParams&,
                        const ExecConfig&) {}
void neuron_backward_cpu(const TensorView&, const TensorView* const*, const TensorView*, const TensorView*,
                         const TensorView* const*, const TensorView* const*, const TensorView&,
                         const TensorView* const*, const TensorView* const*, const TensorView* const*,
                         const NeuronParams&, const ExecConfig&) {}
}  // namespace spikeforge

static int failures = 0;
#define EXPECT(cond)                                              \
  do {                                                            \
    if (!(cond)) {                                                \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                 \
    }                                                             \
  } while (0)

template <typename F>
static bool throws_arg(F&& f, const char* must_contain = nullptr) {
  try {
    f();
  } catch (const ArgumentError& e) {
    return must_contain == nullptr || std::string(e.what()).find(must_contain) != std::string::npos;
  } catch (...) {
    return false;
  }
  return false;
}

// A contiguous view of the given shape with no data behind it.
static TensorView view(std::initializer_list<int64_t> shape, DType dt = DType::f32) {
  TensorView v;
  v.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) v.shape[i++] = s;
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.strides[d] = stride;
    stride *= v.shape[d];
  }
  v.dtype = dt;
  return v;
}

int main() {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t k31 = int64_t(1) << 31, k32 = int64_t(1) << 32;

  // ---- mul_nonneg_fits / checked_mul at the int32 and int64 boundaries
  int64_t r = -1;
  EXPECT(mul_nonneg_fits(k31, k31, &r) && r == (int64_t(1) << 62));
  EXPECT(mul_nonneg_fits(k31 - 1, 2, &r) && r == 2 * (k31 - 1));  // past INT32_MAX: no 32-bit wrap
  EXPECT(mul_nonneg_fits(kMax, 1, &r) && r == kMax);
  EXPECT(mul_nonneg_fits(0, kMax, &r) && r == 0);
  EXPECT(mul_nonneg_fits(kMax, 0, &r) && r == 0);
  r = 123;
  EXPECT(!mul_nonneg_fits(k32, k31, &r) && r == 123);  // 2^63 does not fit; out untouched
  EXPECT(!mul_nonneg_fits(kMax, 2, &r));
  EXPECT(!mul_nonneg_fits(k32, k32 + 1, &r));  // would wrap to 2^32
  EXPECT(!mul_nonneg_fits(-1, 5, &r));
  EXPECT(!mul_nonneg_fits(5, -1, &r));
  EXPECT(mul_nonneg_fits(3037000499LL, 3037000499LL, &r));   // floor(sqrt(INT64_MAX))^2 fits
  EXPECT(!mul_nonneg_fits(3037000500LL, 3037000500LL, &r));  // one more does not
  EXPECT(checked_mul(int64_t(1) << 40, 1 << 20, "x") == (int64_t(1) << 60));
  EXPECT(throws_arg([&] { checked_mul(k32, k32, "x_seq"); }, "x_seq"));
  EXPECT(throws_arg([&] { checked_mul(-3, 2, "weight"); }, "weight"));

  // ---- ceil_div / psn_num_partitions: no n + d - 1 overflow near INT64_MAX
  EXPECT(ceil_div(0, 7) == 0);
  EXPECT(ceil_div(14, 7) == 2);
  EXPECT(ceil_div(15, 7) == 3);
  EXPECT(ceil_div(kMax, kPSNPartition) == kMax / kPSNPartition + 1);
  EXPECT(psn_num_partitions(0) == 0);
  EXPECT(psn_num_partitions(1) == 1);
  EXPECT(psn_num_partitions(kPSNPartition) == 1);
  EXPECT(psn_num_partitions(kPSNPartition + 1) == 2);
  EXPECT(psn_num_partitions(k31 + 1) == k31 / kPSNPartition + 1);
  EXPECT(psn_num_partitions(kMax) == kMax / kPSNPartition + 1);

  // ---- row_offset past 2^31 and 2^32
  EXPECT(row_offset(1 << 20, 1 << 20, 5) == (int64_t(1) << 40) + 5);
  EXPECT(row_offset(3, k31, k31 - 1) == 4 * k31 - 1);

  // ---- TensorView counts and contiguity at 2^42 elements
  TensorView big = view({int64_t(1) << 20, int64_t(1) << 20, 4});
  EXPECT(big.numel() == (int64_t(1) << 42));
  EXPECT(big.is_contiguous());
  EXPECT(big.strides[0] == (int64_t(1) << 22));

  // ---- neuron checks: a legal 2^40-element problem passes, a wrapping T * N is rejected
  {
    NeuronParams p;
    p.T = int64_t(1) << 20;
    p.N = int64_t(1) << 20;
    const TensorView x = view({p.T, p.N}), v = view({p.N});
    const TensorView* none[kMaxParams] = {};
    const TensorView* v_out[kMaxStates] = {&v};
    const TensorView* v_seq[kMaxStates] = {&x};
    EXPECT(!throws_arg([&] { check_neuron_forward_args(x, none, none, x, v_out, nullptr, none, p); }));
    EXPECT(!throws_arg([&] { check_neuron_forward_args(x, none, none, x, v_seq, &x, v_out, p); }));  // v_seq, H, last V
    // T * N = 2^64 + 2^32 wraps to 2^32 in int64 arithmetic: a 2^32-element x must not pass
    NeuronParams q = p;
    q.T = k32;
    q.N = k32 + 1;
    const TensorView xs = view({k32}), vs = view({k32 + 1});
    const TensorView* vs_out[kMaxStates] = {&vs};
    EXPECT(throws_arg([&] { check_neuron_forward_args(xs, none, none, xs, vs_out, nullptr, none, q); }, "overflows"));
    EXPECT(throws_arg([&] { check_neuron_backward_args(xs, none, &xs, nullptr, none, none, xs, none, none, none, q); },
                      "overflows"));
    // a coefficient slot's layout C * S that wraps must not pass the divisibility check
    NeuronParams c = p;
    c.layout[0].C = k32;
    c.layout[0].S = k32;
    const TensorView w = view({k32});
    const TensorView* slots[kMaxParams] = {&w};
    EXPECT(throws_arg([&] { check_neuron_forward_args(x, none, slots, x, v_out, nullptr, none, c); }));
  }

  // ---- PSN checks: large legal N passes; wrapping T * N and partials sizes are rejected
  {
    PSNParams p;
    p.T_out = p.T_in = 8;
    p.N = int64_t(1) << 33;  // 2^36 elements in x
    const TensorView x = view({p.T_in, p.N}), w = view({8, 8}), b = view({8});
    EXPECT(!throws_arg([&] { check_psn_forward_args(x, w, b, x, nullptr, p); }));
    const int64_t nparts = psn_num_partitions(p.N);
    const TensorView part = view({nparts, 8 * 9}, DType::f64);
    EXPECT(!throws_arg([&] { check_psn_backward_args(x, x, w, b, &x, &part, &w, &b, p); }));
    const TensorView part_small = view({nparts - 1, 8 * 9}, DType::f64);
    EXPECT(throws_arg([&] { check_psn_backward_args(x, x, w, b, &x, &part_small, &w, &b, p); }, "partials"));

    PSNParams q;
    q.T_out = q.T_in = k32;
    q.N = k32 + 1;  // T_in * N wraps to 2^32
    const TensorView xs = view({k32}), ws = view({1}), bs = view({k32});
    EXPECT(throws_arg([&] { check_psn_forward_args(xs, ws, bs, xs, nullptr, q); }, "overflows"));
    PSNParams e;
    e.T_out = 1;
    e.T_in = kMax;  // T_in + 1 of the partials row would overflow
    e.N = 0;
    const TensorView x0 = view({0}), w0 = view({1});
    EXPECT(throws_arg([&] { check_psn_forward_args(x0, w0, w0, x0, nullptr, e); }));
  }

  if (failures) {
    std::printf("%d FAILED\n", failures);
    return 1;
  }
  std::printf("ALL PASSED\n");
  return 0;
}
