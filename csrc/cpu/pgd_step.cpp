// CPU kernel of one projected-gradient attack step (robustkernels/reference/pgd_step.py):
//   linf: u = x + step_b * sign(g);      x' = clamp(u, o - eps, o + eps)
//   l2:   u = x + step_b * g / ||g_b||;  x' = o + (u - o) * min(1, eps / ||u - o||_b)
//   then  x' = clamp(x', lo, hi)
// (normalize = false: u = x + step_b * g). Norms are per sample b over its M
// elements, accumulated in double; a norm below kNormFloor counts as kNormFloor.
// Parallel over samples; each sample is one L∞ pass or three L2 passes (||g||,
// u with ||u - o||, the projection), with branch-free loops that vectorise.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../arg_checks.h"
#include "lane_sum.h"
#include "multiversion.h"

namespace robustkernels {
namespace {

constexpr double kNormFloor = 1e-12;
constexpr int64_t kGrainElements = 32768;

struct StepArgs {
  double eps, lo, hi;
  bool l2, normalize;
};

template <typename acc_t>
RK_ALWAYS_INLINE inline acc_t clamp_to(acc_t v, acc_t low, acc_t high) {
  v = v < low ? low : v;
  return v > high ? high : v;
}

// Samples [b_begin, b_end) of rows of M contiguous elements. Always inlined, so that
// the float32 entry point below is compiled once per instruction set.
template <typename scalar_t>
RK_ALWAYS_INLINE inline void pgd_step_samples(const scalar_t* x, const scalar_t* g, const scalar_t* o,
                                              const double* steps, scalar_t* out, int64_t M, StepArgs a,
                                              int64_t b_begin, int64_t b_end) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t eps = static_cast<acc_t>(a.eps), lo = static_cast<acc_t>(a.lo), hi = static_cast<acc_t>(a.hi);
  for (int64_t b = b_begin; b < b_end; ++b) {
    const scalar_t* xb = x + b * M;
    const scalar_t* gb = g + b * M;
    const scalar_t* ob = o + b * M;
    scalar_t* yb = out + b * M;
    if (!a.l2) {
      const acc_t s = static_cast<acc_t>(steps[b]);
      if (a.normalize) {
#pragma omp simd
        for (int64_t i = 0; i < M; ++i) {
          const acc_t gi = static_cast<acc_t>(gb[i]);
          const acc_t sign = static_cast<acc_t>(gi > acc_t(0)) - static_cast<acc_t>(gi < acc_t(0));
          const acc_t oi = static_cast<acc_t>(ob[i]);
          const acc_t u = static_cast<acc_t>(xb[i]) + s * sign;
          yb[i] = static_cast<scalar_t>(clamp_to(clamp_to(u, oi - eps, oi + eps), lo, hi));
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < M; ++i) {
          const acc_t oi = static_cast<acc_t>(ob[i]);
          const acc_t u = static_cast<acc_t>(xb[i]) + s * static_cast<acc_t>(gb[i]);
          yb[i] = static_cast<scalar_t>(clamp_to(clamp_to(u, oi - eps, oi + eps), lo, hi));
        }
      }
      continue;
    }
    double scale = steps[b];
    if (a.normalize) {
      const double g_sq = lane_sum(M, [&](int64_t i) {
        const double gi = static_cast<double>(gb[i]);
        return gi * gi;
      });
      scale /= std::max(std::sqrt(g_sq), kNormFloor);
    }
    // u goes to the output first; the projection then rescales it in place.
    const acc_t s = static_cast<acc_t>(scale);
    const double d_sq = lane_sum(M, [&](int64_t i) {
      const acc_t u = static_cast<acc_t>(xb[i]) + s * static_cast<acc_t>(gb[i]);
      yb[i] = static_cast<scalar_t>(u);
      const double d = static_cast<double>(u) - static_cast<double>(ob[i]);
      return d * d;
    });
    const acc_t factor = static_cast<acc_t>(std::min(1.0, a.eps / std::max(std::sqrt(d_sq), kNormFloor)));
#pragma omp simd
    for (int64_t i = 0; i < M; ++i) {
      const acc_t oi = static_cast<acc_t>(ob[i]);
      yb[i] = static_cast<scalar_t>(clamp_to(oi + (static_cast<acc_t>(yb[i]) - oi) * factor, lo, hi));
    }
  }
}

// float32, the common case, compiled for each instruction-set path (the baseline is SSE2).
RK_PER_ISA(void, pgd_step_samples_f32,
           (const float* x, const float* g, const float* o, const double* steps, float* out, int64_t M, StepArgs a,
            int64_t b_begin, int64_t b_end),
           (x, g, o, steps, out, M, a, b_begin, b_end), pgd_step_samples<float>)

template <typename scalar_t>
void pgd_step_impl(const scalar_t* x, const scalar_t* g, const scalar_t* o, const double* steps, scalar_t* out,
                   int64_t B, int64_t M, StepArgs a) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / M);
  at::parallel_for(0, B, grain, [&](int64_t b_begin, int64_t b_end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      pgd_step_samples_f32(x, g, o, steps, out, M, a, b_begin, b_end);
    } else {
      pgd_step_samples<scalar_t>(x, g, o, steps, out, M, a, b_begin, b_end);
    }
  });
}

at::Tensor pgd_step_fwd_cpu(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x_orig,
                            const at::Tensor& step, double eps, c10::string_view norm, double lo, double hi,
                            bool normalize) {
  const char* op = "pgd_step";
  check_kernel_float(op, "x_adv", x_adv);
  check_device_type(op, "x_adv", x_adv, at::kCPU);
  TORCH_CHECK_VALUE(x_adv.dim() >= 1, "pgd_step: x_adv must have a batch dimension, got a 0-d tensor");
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"grad", &grad}, {"x_orig", &x_orig}}) {
    check_same_dtype(op, name, *t, "x_adv", x_adv);
    check_same_device(op, name, *t, "x_adv", x_adv);
    TORCH_CHECK_VALUE(t->sizes() == x_adv.sizes(), "pgd_step: ", name, " must have x_adv's shape ", x_adv.sizes(),
                      ", got ", t->sizes());
  }
  const int64_t B = x_adv.size(0);
  check_kernel_float(op, "step", step);
  check_same_device(op, "step", step, "x_adv", x_adv);
  check_shape(op, "step", step, {B});
  TORCH_CHECK_VALUE(norm == "linf" || norm == "l2", "pgd_step: norm must be 'linf' or 'l2', got '",
                    std::string(norm), "'");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0, "pgd_step: eps must be finite and >= 0, got ", eps);
  TORCH_CHECK_VALUE(lo <= hi, "pgd_step: lo must be <= hi, got lo = ", lo, ", hi = ", hi);
  const at::Tensor x = x_adv.contiguous(), g = grad.contiguous(), o = x_orig.contiguous();
  const at::Tensor steps = step.to(at::kDouble).contiguous();
  at::Tensor out = at::empty_like(x);
  const int64_t M = B == 0 ? 0 : x.numel() / B;
  if (x.numel() == 0) return out;
  const StepArgs args{eps, lo, hi, norm == "l2", normalize};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pgd_step_fwd", [&] {
    pgd_step_impl<scalar_t>(x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), o.const_data_ptr<scalar_t>(),
                            steps.const_data_ptr<double>(), out.mutable_data_ptr<scalar_t>(), B, M, args);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) { m.impl("pgd_step_fwd_kernel", &pgd_step_fwd_cpu); }

}  // namespace robustkernels
