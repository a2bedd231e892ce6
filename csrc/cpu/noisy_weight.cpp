// CPU kernels of the noisy / masked weight transform
//   W' = M * (W + lam * alpha * std(W) * eta(seed))
// and its backward. eta is regenerated from (seed, element index) with Philox,
// never stored.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "../noisy_weight_checks.h"
#include "../philox.h"

namespace robustkernels {
namespace {

constexpr int64_t kGrain = 4096;
// Normals are produced in blocks: the Philox rounds over a block form a loop
// without calls that the compiler vectorises; Box-Muller follows in a second loop.
constexpr int64_t kNoiseBlock = 64;

void fill_philox_normal(uint64_t seed, int64_t first, int64_t count, float* out) {
  uint32_t w0[kNoiseBlock];
  uint32_t w1[kNoiseBlock];
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t offset = static_cast<uint64_t>(first + i);
    uint32_t c0 = static_cast<uint32_t>(offset);
    uint32_t c1 = static_cast<uint32_t>(offset >> 32);
    uint32_t c2 = 0;
    uint32_t c3 = 0;
    philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed),
                  static_cast<uint32_t>(seed >> 32));
    w0[i] = c0;
    w1[i] = c1;
  }
  for (int64_t i = 0; i < count; ++i) {
    out[i] = uniform_pair_to_normal(uint32_to_uniform(w0[i]), uint32_to_uniform(w1[i]));
  }
}

// Runs body(begin, count, noise) over blocks of at most kNoiseBlock elements of
// [begin, end), noise holding eta for those elements.
template <typename Body>
void for_each_noise_block(uint64_t seed, int64_t begin, int64_t end, const Body& body) {
  float noise[kNoiseBlock];
  for (int64_t start = begin; start < end; start += kNoiseBlock) {
    const int64_t count = std::min(kNoiseBlock, end - start);
    fill_philox_normal(seed, start, count, noise);
    body(start, count, noise);
  }
}

// Unbiased standard deviation over the whole tensor, two passes in double.
double weight_std(const at::Tensor& weight) {
  const int64_t n = weight.numel();
  if (n < 2) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  double sum = 0.0;
  double sum_sq_dev = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "weight_std", [&] {
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    sum = at::parallel_reduce(
        0, n, kGrain, 0.0,
        [&](int64_t begin, int64_t end, double acc) {
          for (int64_t i = begin; i < end; ++i) acc += static_cast<double>(w[i]);
          return acc;
        },
        std::plus<double>());
    const double mean = sum / static_cast<double>(n);
    sum_sq_dev = at::parallel_reduce(
        0, n, kGrain, 0.0,
        [&](int64_t begin, int64_t end, double acc) {
          for (int64_t i = begin; i < end; ++i) {
            const double d = static_cast<double>(w[i]) - mean;
            acc += d * d;
          }
          return acc;
        },
        std::plus<double>());
  });
  return std::sqrt(sum_sq_dev / static_cast<double>(n - 1));
}

at::Tensor sigma_tensor(double sigma, const at::Tensor& weight) {
  const auto dtype = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return at::scalar_tensor(sigma, weight.options().dtype(dtype));
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_fwd_cpu(const at::Tensor& weight_in,
                                                        const at::Tensor& alpha_in, double lam,
                                                        int64_t seed,
                                                        const std::optional<at::Tensor>& mask_in) {
  const AlphaMode mode = check_noisy_weight_args("noisy_weight", weight_in, alpha_in, mask_in);
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const double sigma = weight_std(weight);
  at::Tensor out = at::empty_like(weight, at::MemoryFormat::Contiguous);
  const int64_t n = weight.numel();
  const int64_t inner = n / weight.size(0);
  const bool* m = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "noisy_weight_fwd", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* a = alpha.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // lam == 0 is the clean path: no noise is generated and W' = M * W exactly.
    if (lam == 0.0) {
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) o[i] = (m == nullptr || m[i]) ? w[i] : scalar_t(0);
      });
      return;
    }
    const opmath_t scale = static_cast<opmath_t>(lam * sigma);
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for_each_noise_block(seed, begin, end, [&](int64_t start, int64_t count, const float* eta) {
        for (int64_t j = 0; j < count; ++j) {
          const int64_t i = start + j;
          const opmath_t alpha_i = static_cast<opmath_t>(a[alpha_index(mode, i, inner)]);
          const opmath_t value = static_cast<opmath_t>(w[i]) + scale * alpha_i * static_cast<opmath_t>(eta[j]);
          o[i] = (m == nullptr || m[i]) ? static_cast<scalar_t>(value) : scalar_t(0);
        }
      });
    });
  });
  return {out.view(weight_in.sizes()), sigma_tensor(sigma, weight)};
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_bwd_cpu(const at::Tensor& grad_in,
                                                        const at::Tensor& alpha_in,
                                                        const at::Tensor& sigma_in, double lam,
                                                        int64_t seed,
                                                        const std::optional<at::Tensor>& mask_in,
                                                        bool need_alpha_grad) {
  const AlphaMode mode = check_noisy_weight_args("noisy_weight_backward", grad_in, alpha_in, mask_in);
  TORCH_CHECK_VALUE(sigma_in.numel() == 1, "noisy_weight_backward: sigma must hold one value, got ",
                    sigma_in.numel());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const int64_t n = grad.numel();
  const int64_t channels = grad.size(0);
  const int64_t inner = n / channels;
  const bool* m = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;

  at::Tensor grad_weight = empty_like(grad, at::MemoryFormat::Contiguous);
  at::Tensor grad_alpha = need_alpha_grad ? at::zeros_like(alpha, at::MemoryFormat::Contiguous)
                                          : at::empty({0}, alpha.options());
  const bool alpha_grad_nonzero = need_alpha_grad && lam != 0.0;
  const double scale = alpha_grad_nonzero ? lam * sigma_in.item<double>() : 0.0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "noisy_weight_bwd", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
    if (!alpha_grad_nonzero) {
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) gw[i] = (m == nullptr || m[i]) ? g[i] : scalar_t(0);
      });
      return;
    }
    scalar_t* ga = grad_alpha.mutable_data_ptr<scalar_t>();
    if (mode == AlphaMode::kElement) {
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        for_each_noise_block(seed, begin, end, [&](int64_t start, int64_t count, const float* eta) {
          for (int64_t j = 0; j < count; ++j) {
            const int64_t i = start + j;
            const bool keep = m == nullptr || m[i];
            gw[i] = keep ? g[i] : scalar_t(0);
            ga[i] = keep ? static_cast<scalar_t>(scale * static_cast<opmath_t>(g[i]) * eta[j]) : scalar_t(0);
          }
        });
      });
      return;
    }
    // Layer and channel modes: one partial per output channel, combined in a
    // fixed order so the result does not depend on the thread count.
    std::vector<double> partial(channels, 0.0);
    at::parallel_for(0, channels, std::max<int64_t>(1, kGrain / inner), [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        double acc = 0.0;
        for_each_noise_block(seed, c * inner, (c + 1) * inner, [&](int64_t start, int64_t count, const float* eta) {
          for (int64_t j = 0; j < count; ++j) {
            const int64_t i = start + j;
            const bool keep = m == nullptr || m[i];
            gw[i] = keep ? g[i] : scalar_t(0);
            acc += keep ? static_cast<double>(g[i]) * static_cast<double>(eta[j]) : 0.0;
          }
        });
        partial[c] = acc;
      }
    });
    if (mode == AlphaMode::kChannel) {
      for (int64_t c = 0; c < channels; ++c) ga[c] = static_cast<scalar_t>(scale * partial[c]);
    } else {
      double total = 0.0;
      for (int64_t c = 0; c < channels; ++c) total += partial[c];
      ga[0] = static_cast<scalar_t>(scale * total);
    }
  });
  if (need_alpha_grad) {
    grad_alpha = grad_alpha.view(alpha_in.sizes());
  }
  return {grad_weight.view(grad_in.sizes()), grad_alpha};
}

at::Tensor philox_normal_cpu(const at::Tensor& like, int64_t seed, int64_t offset) {
  TORCH_CHECK_VALUE(offset >= 0, "philox_normal: offset must be non-negative, got ", offset);
  at::Tensor out = at::empty(like.sizes(), like.options().dtype(at::kFloat));
  float* o = out.mutable_data_ptr<float>();
  at::parallel_for(0, out.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t start = begin; start < end; start += kNoiseBlock) {
      fill_philox_normal(seed, offset + start, std::min(kNoiseBlock, end - start), o + start);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("noisy_weight_fwd_kernel", &noisy_weight_fwd_cpu);
  m.impl("noisy_weight_bwd_kernel", &noisy_weight_bwd_cpu);
  m.impl("philox_normal_kernel", &philox_normal_cpu);
}

}  // namespace robustkernels
