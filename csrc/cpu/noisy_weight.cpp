// CPU kernels of the noisy / masked weight transform
//   W' = M * (W + lam * alpha * std(W) * eta(seed))
// and its backward. eta is regenerated from (seed, element index) with Philox,
// never stored: normals are made kNormalBlock at a time into a stack buffer
// (AVX2 where the processor has it) and consumed at once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../noisy_weight_checks.h"
#include "cpu_empty.h"
#include "float_loops.h"
#include "normal_block.h"
#include "weight_noise.h"

namespace robustkernels {
namespace {

template <typename scalar_t>
void apply_mask(const scalar_t* src, const bool* m, scalar_t* dst, int64_t n) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dst[i] = (m == nullptr || m[i]) ? src[i] : scalar_t(0);
  });
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_fwd_cpu(const at::Tensor& weight_in, const at::Tensor& alpha_in,
                                                        double lam, int64_t seed_in,
                                                        const std::optional<at::Tensor>& mask_in,
                                                        const std::optional<at::Tensor>& seed_offset) {
  const AlphaMode mode =
      check_noisy_weight_args("noisy_weight", "weight", weight_in, alpha_in, seed_in, mask_in, at::kCPU);
  check_seed_offset("noisy_weight", seed_offset, "weight", weight_in);
  const int64_t seed = seed_with_offset("noisy_weight", seed_in, seed_offset);
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  at::Tensor out = cpu_empty(weight.sizes(), weight.scalar_type());
  const auto sigma_type = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t n = weight.numel();
  const int64_t inner = n / weight.size(0);
  const bool* m = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;
  double sigma = 0.0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "noisy_weight_fwd", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* a = alpha.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    sigma = weight_std(w, n);
    // lam == 0 is the clean path: no noise is generated and W' = M * W exactly.
    if (lam == 0.0) {
      apply_mask(w, m, o, n);
      return;
    }
    const opmath_t scale = static_cast<opmath_t>(lam * sigma);
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for_each_row_piece(begin, end, inner, [&](int64_t row, int64_t piece_begin, int64_t piece_end) {
        const opmath_t row_scale = scale * static_cast<opmath_t>(a[mode == AlphaMode::kChannel ? row : 0]);
        for_each_noise_block(seed, piece_begin, piece_end, [&](int64_t start, int64_t count, const float* eta) {
          const scalar_t* wb = w + start;
          scalar_t* ob = o + start;
          const bool* mb = m == nullptr ? nullptr : m + start;
          // Branch-free loops per case, so that the compiler vectorises each.
          if (mode == AlphaMode::kElement) {
            const scalar_t* ab = a + start;
            for (int64_t j = 0; j < count; ++j) {
              const opmath_t value = static_cast<opmath_t>(wb[j]) +
                                     scale * static_cast<opmath_t>(ab[j]) * static_cast<opmath_t>(eta[j]);
              ob[j] = (mb == nullptr || mb[j]) ? static_cast<scalar_t>(value) : scalar_t(0);
            }
          } else if (mb == nullptr) {
            for (int64_t j = 0; j < count; ++j) {
              ob[j] = static_cast<scalar_t>(static_cast<opmath_t>(wb[j]) + row_scale * static_cast<opmath_t>(eta[j]));
            }
          } else {
            for (int64_t j = 0; j < count; ++j) {
              const opmath_t value = static_cast<opmath_t>(wb[j]) + row_scale * static_cast<opmath_t>(eta[j]);
              ob[j] = mb[j] ? static_cast<scalar_t>(value) : scalar_t(0);
            }
          }
        });
      });
    });
  });
  // written in place: at::scalar_tensor's dispatch and fill cost more than this kernel on a small weight
  at::Tensor sigma_out = cpu_empty({}, sigma_type);
  AT_DISPATCH_FLOATING_TYPES(sigma_type, "noisy_weight_sigma",
                             [&] { *sigma_out.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(sigma); });
  return {out, sigma_out};
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& alpha_in,
                                                        const at::Tensor& sigma_in, double lam, int64_t seed_in,
                                                        const std::optional<at::Tensor>& mask_in,
                                                        bool need_alpha_grad,
                                                        const std::optional<at::Tensor>& seed_offset) {
  const char* op = "noisy_weight_backward";
  const AlphaMode mode = check_noisy_weight_backward_args(op, grad_in, alpha_in, sigma_in, seed_in, mask_in, at::kCPU);
  check_seed_offset(op, seed_offset, "grad_out", grad_in);
  const int64_t seed = seed_with_offset(op, seed_in, seed_offset);
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const int64_t n = grad.numel();
  const int64_t channels = grad.size(0);
  const int64_t inner = n / channels;
  const bool* m = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;

  at::Tensor grad_weight = cpu_empty(grad.sizes(), grad.scalar_type());
  if (!need_alpha_grad) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "noisy_weight_bwd", [&] {
      apply_mask(grad.const_data_ptr<scalar_t>(), m, grad_weight.mutable_data_ptr<scalar_t>(), n);
    });
    return {grad_weight, cpu_empty({0}, alpha.scalar_type())};
  }
  // every entry of dalpha is written below unless lam == 0 (dalpha = 0 exactly)
  at::Tensor grad_alpha =
      lam == 0.0 ? at::zeros(alpha.sizes(), alpha.options()) : cpu_empty(alpha.sizes(), alpha.scalar_type());
  // sigma read in place: item()'s dispatch costs more than this kernel on a small weight
  double sigma = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sigma_in.scalar_type(), "noisy_weight_bwd_sigma",
                                  [&] { sigma = static_cast<double>(*sigma_in.const_data_ptr<scalar_t>()); });
  const double scale = lam * sigma;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "noisy_weight_bwd", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
    if (lam == 0.0) {  // dalpha = 0 exactly; no noise needed
      apply_mask(g, m, gw, n);
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
    // fixed order, so the result does not depend on the number of threads.
    std::vector<double> partial(channels, 0.0);
    at::parallel_for(0, channels, std::max<int64_t>(1, kGrain / inner), [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        double acc = 0.0;
        for_each_noise_block(seed, c * inner, (c + 1) * inner, [&](int64_t start, int64_t count, const float* eta) {
          acc += masked_copy_dot(g + start, m == nullptr ? nullptr : m + start, eta, gw + start, count);
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
  return {grad_weight, grad_alpha};
}

at::Tensor philox_normal_cpu(const at::Tensor& like, int64_t seed, int64_t offset) {
  check_philox_normal_args("philox_normal", like, seed, offset, at::kCPU);
  at::Tensor out = cpu_empty(like.sizes(), at::kFloat);
  float* o = out.mutable_data_ptr<float>();
  at::parallel_for(0, out.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t start = begin; start < end; start += kNormalBlock) {
      fill_normal_block(seed, static_cast<uint64_t>(offset + start), std::min(kNormalBlock, end - start), o + start);
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
