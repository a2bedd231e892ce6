// CPU kernels of the multi-resolution input stack of the multi-resolution
// self-ensemble (Fort & Lakshminarayanan, "Ensemble everything everywhere").
// The recipe and the random streams are specified in
// robustkernels/reference/multires_stack.py; per image b and view v:
//   A   = clamp(c * x + (1 - c) * m, 0, 1), m = mean_HW(grey(x))   (adjust_contrast; else A = x)
//   R   = roll(c * A + (1 - c) * mean_channels(A), (dy, dx))
//   up  = Resize_up(Resize_down(R) + noise_low) + noise_high   (no resizes at full size)
//   out = clip(up, 0, 1), plus one bit per element: 0 <= up <= 1 (where the clip
//         passes the gradient); the backward needs it, (c, dy, dx) and x (where A's clamp passed).
// Each resize is separable; each 1-D pass is a banded matrix (resize_tables.h: F.interpolate's
// own weights), so every interpolation mode is the same code here. One task per image: the
// channel mean and the image stay in cache across the views. The steps on one plane are in
// multires_stack_steps.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../arg_checks.h"
#include "../noisy_weight_checks.h"  // seed_offset
#include "multires_stack_steps.h"
#include "multiversion.h"
#include "resize_tables.h"

namespace robustkernels {
namespace {

using namespace multires;

template <typename scalar_t>
RK_ALWAYS_INLINE inline void forward_images(const ForwardJob<scalar_t>& job, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = job.channels, height = job.height, width = job.width, plane = height * width;
  const int64_t mask_row = (width + 7) / 8;
  const bool noisy = job.noise != 0.0f;
  std::vector<acc_t> xs(channels * plane), contrasted(channels * plane), mean(plane), view_mean(plane),
      rows(plane), low(plane), cols(plane), up(plane);
  for (int64_t b = begin; b < end; ++b) {
    const acc_t grey = load_image(job.x + b * channels * plane, channels, plane, xs.data(), mean.data());
    for (int64_t v = 0; v < job.num_views; ++v) {
      const View<acc_t>& view = job.views[v];
      const ImageParams ip =
          image_params(job.seed, v * job.batch + b, job.jitter, job.contrast_low, job.contrast_high, height, width);
      const acc_t c = static_cast<acc_t>(ip.contrast);
      const acc_t one_minus_c = acc_t(1) - c;
      const int64_t low_plane = view.height * view.width;
      const acc_t* source = xs.data();
      const acc_t* mix_mean = mean.data();
      if (job.adjust_contrast) {
        // c is this view's: the contrasted image and its channel mean differ per view
        const acc_t offset = one_minus_c * grey;
        std::fill(view_mean.begin(), view_mean.end(), acc_t(0));
        for (int64_t ch = 0; ch < channels; ++ch)
          for (int64_t p = 0; p < plane; ++p) {
            const acc_t value = std::min(std::max(c * xs[ch * plane + p] + offset, acc_t(0)), acc_t(1));
            contrasted[ch * plane + p] = value;
            view_mean[p] += value;
          }
        for (int64_t p = 0; p < plane; ++p) view_mean[p] /= static_cast<acc_t>(channels);
        source = contrasted.data();
        mix_mean = view_mean.data();
      }
      for (int64_t ch = 0; ch < channels; ++ch) {
        const acc_t* src = source + ch * plane;
        for_each_rolled(height, width, ip.shift_y, ip.shift_x,
                        [&](int64_t y, int64_t ys, int64_t dst0, int64_t src0, int64_t n) {
                          acc_t* d = up.data() + y * width + dst0;
                          const acc_t* s = src + ys * width + src0;
                          const acc_t* m = mix_mean + ys * width + src0;
                          for (int64_t i = 0; i < n; ++i) d[i] = c * s[i] + one_minus_c * m[i];
                        });
        const uint64_t plane_index = static_cast<uint64_t>(b * channels + ch);
        if (view.resized) {
          // Every pass runs along rows (contiguous, vectorised); the column passes
          // work on transposed planes: low and the up-column result are [columns][rows].
          rows_pass(view.down_y, view.height, up.data(), rows.data(), width);
          transpose(rows.data(), view.height, width, cols.data());
          rows_pass(view.down_x, view.width, cols.data(), low.data(), view.height);
          if (noisy)
            add_noise(low.data(), view.height, view.width, true, job.seed, view.low_offset + plane_index * low_plane,
                      job.noise, job.gaussian);
          rows_pass(view.up_x, width, low.data(), cols.data(), view.height);
          transpose(cols.data(), width, view.height, rows.data());
          rows_pass(view.up_y, height, rows.data(), up.data(), width);
        } else if (noisy) {
          add_noise(up.data(), height, width, false, job.seed, view.low_offset + plane_index * plane, job.noise,
                    job.gaussian);
        }
        if (noisy)
          add_noise(up.data(), height, width, false, job.seed, view.high_offset + plane_index * plane, job.noise,
                    job.gaussian);
        const int64_t out_plane = (b * job.num_views + v) * channels + ch;
        for (int64_t y = 0; y < height; ++y)
          clip_row(up.data() + y * width, width, job.out + out_plane * plane + y * width,
                   job.mask + (out_plane * height + y) * mask_row);
      }
    }
  }
}

template <typename scalar_t>
RK_ALWAYS_INLINE inline void backward_images(const BackwardJob<scalar_t>& job, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = job.channels, height = job.height, width = job.width, plane = height * width;
  const int64_t mask_row = (width + 7) / 8;
  std::vector<acc_t> acc(channels * plane), dview(channels * plane), xs(channels * plane), mean(plane),
      dsum(plane), g(plane), cols(plane), low(plane), rows(plane), drolled(plane);
  for (int64_t b = begin; b < end; ++b) {
    std::fill(acc.begin(), acc.end(), acc_t(0));
    acc_t grey = 0, d_grey = 0;
    if (job.adjust_contrast) grey = load_image(job.x + b * channels * plane, channels, plane, xs.data(), mean.data());
    for (int64_t v = 0; v < job.num_views; ++v) {
      const View<acc_t>& view = job.views[v];
      const ImageParams ip =
          image_params(job.seed, v * job.batch + b, job.jitter, job.contrast_low, job.contrast_high, height, width);
      const acc_t c = static_cast<acc_t>(ip.contrast);
      const acc_t one_minus_c = acc_t(1) - c;
      for (int64_t ch = 0; ch < channels; ++ch) {
        const int64_t out_plane = (b * job.num_views + v) * channels + ch;
        for (int64_t y = 0; y < height; ++y)
          unmask_row(job.grad + out_plane * plane + y * width, job.mask + (out_plane * height + y) * mask_row, width,
                     g.data() + y * width);
        const acc_t* d = g.data();
        if (view.resized) {
          // The forward's passes transposed, in reverse order (see forward_images).
          rows_pass_t(view.up_y, height, view.height, g.data(), rows.data(), width);
          transpose(rows.data(), view.height, width, cols.data());
          rows_pass_t(view.up_x, width, view.width, cols.data(), low.data(), view.height);
          rows_pass_t(view.down_x, view.width, width, low.data(), cols.data(), view.height);
          transpose(cols.data(), width, view.height, rows.data());
          rows_pass_t(view.down_y, view.height, height, rows.data(), drolled.data(), width);
          d = drolled.data();
        }
        acc_t* unrolled = dview.data() + ch * plane;
        for_each_rolled(height, width, ip.shift_y, ip.shift_x,
                        [&](int64_t y, int64_t ys, int64_t dst0, int64_t src0, int64_t n) {
                          std::copy(d + y * width + dst0, d + y * width + dst0 + n, unrolled + ys * width + src0);
                        });
      }
      // through the colour mix: dA = c dR + (1 - c) / C sum_channels dR
      std::fill(dsum.begin(), dsum.end(), acc_t(0));
      for (int64_t ch = 0; ch < channels; ++ch)
        for (int64_t p = 0; p < plane; ++p) dsum[p] += dview[ch * plane + p];
      const acc_t share = one_minus_c / static_cast<acc_t>(channels);
      if (!job.adjust_contrast) {
        for (int64_t ch = 0; ch < channels; ++ch)
          for (int64_t p = 0; p < plane; ++p) acc[ch * plane + p] += c * dview[ch * plane + p] + share * dsum[p];
        continue;
      }
      // through adjust_contrast: its clamp (recomputed from x), then c x + (1 - c) m
      const acc_t offset = one_minus_c * grey;
      acc_t view_d_grey = 0;
      for (int64_t ch = 0; ch < channels; ++ch)
        for (int64_t p = 0; p < plane; ++p) {
          const acc_t blend = c * xs[ch * plane + p] + offset;
          const bool passes = (blend >= acc_t(0)) & (blend <= acc_t(1));
          const acc_t da = passes ? c * dview[ch * plane + p] + share * dsum[p] : acc_t(0);
          acc[ch * plane + p] += c * da;
          view_d_grey += da;
        }
      d_grey += one_minus_c * view_d_grey;
    }
    scalar_t* out = job.dx + b * channels * plane;
    for (int64_t ch = 0; ch < channels; ++ch) {
      const acc_t spread = job.adjust_contrast ? grey_weight<acc_t>(channels, ch) * d_grey / static_cast<acc_t>(plane)
                                               : acc_t(0);
      for (int64_t p = 0; p < plane; ++p) out[ch * plane + p] = static_cast<scalar_t>(acc[ch * plane + p] + spread);
    }
  }
}

// float32, the common case, compiled for each instruction-set path (the
// extension's baseline is plain x86-64, which would leave these loops on SSE2).
RK_PER_ISA(void, forward_images_f32, (const ForwardJob<float>& job, int64_t begin, int64_t end), (job, begin, end),
           forward_images<float>)
RK_PER_ISA(void, backward_images_f32, (const BackwardJob<float>& job, int64_t begin, int64_t end),
           (job, begin, end), backward_images<float>)

template <typename scalar_t>
void forward_impl(const at::Tensor& x, const std::vector<View<at::opmath_type<scalar_t>>>& views, int64_t jitter,
                  float noise, bool gaussian, float contrast_low, float contrast_high, bool adjust_contrast,
                  uint64_t seed, at::Tensor& out, at::Tensor& mask) {
  const ForwardJob<scalar_t> job{x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), mask.data_ptr<uint8_t>(),
                                 views.data(), static_cast<int64_t>(views.size()), x.size(0), x.size(1), x.size(2),
                                 x.size(3), jitter, noise, contrast_low, contrast_high, gaussian, adjust_contrast,
                                 seed};
  at::parallel_for(0, job.batch, 1, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      forward_images_f32(job, begin, end);
    } else {
      forward_images<scalar_t>(job, begin, end);
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& mask, const at::Tensor& x,
                   const std::vector<View<at::opmath_type<scalar_t>>>& views, int64_t jitter, float contrast_low,
                   float contrast_high, bool adjust_contrast, uint64_t seed, at::Tensor& dx) {
  const BackwardJob<scalar_t> job{grad.data_ptr<scalar_t>(), mask.data_ptr<uint8_t>(), x.data_ptr<scalar_t>(),
                                  dx.data_ptr<scalar_t>(), views.data(), static_cast<int64_t>(views.size()),
                                  dx.size(0), dx.size(1), dx.size(2), dx.size(3), jitter, contrast_low,
                                  contrast_high, adjust_contrast, seed};
  at::parallel_for(0, job.batch, 1, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      backward_images_f32(job, begin, end);
    } else {
      backward_images<scalar_t>(job, begin, end);
    }
  });
}

// Every view of one call, with the resize tables its passes read (kept alive here).
template <typename acc_t>
struct Views {
  std::vector<View<acc_t>> views;
  std::vector<std::shared_ptr<const ResizeTable>> tables;
};

template <typename acc_t>
Pass<acc_t> as_pass(const ResizeTable& table) {
  if constexpr (std::is_same_v<acc_t, double>) {
    return {table.start.data(), table.weight.data(), table.taps};
  } else {
    return {table.start.data(), table.weight32.data(), table.taps};
  }
}

int64_t align4(int64_t n) { return (n + 3) / 4 * 4; }

// Per view its four resize passes (the down one antialiased when asked and the mode has it; none
// at full size) and the element offsets of its two noise streams (reference noise_layout).
template <typename acc_t>
Views<acc_t> make_views(at::IntArrayRef heights, at::IntArrayRef widths, int64_t batch, int64_t channels,
                        int64_t height, int64_t width, Interpolation mode, bool antialias) {
  const int64_t num_views = static_cast<int64_t>(heights.size());
  const bool antialias_down = antialias && mode != Interpolation::kArea;
  Views<acc_t> result;
  result.views.resize(num_views);
  int64_t offset = align4(4 * num_views * batch);
  for (int64_t v = 0; v < num_views; ++v) {
    View<acc_t>& view = result.views[v];
    view.height = heights[v];
    view.width = widths[v];
    view.resized = view.height != height || view.width != width;
    view.low_offset = static_cast<uint64_t>(offset);
    const int64_t high = align4(offset + batch * channels * view.height * view.width);
    view.high_offset = static_cast<uint64_t>(high);
    offset = align4(high + batch * channels * height * width);
    if (!view.resized) continue;
    const struct {
      int64_t n_in, n_out;
      bool antialias;
      Pass<acc_t>* pass;
    } passes[] = {{height, view.height, antialias_down, &view.down_y},
                  {width, view.width, antialias_down, &view.down_x},
                  {view.height, height, false, &view.up_y},
                  {view.width, width, false, &view.up_x}};
    for (const auto& p : passes) {
      result.tables.push_back(resize_table(p.n_in, p.n_out, mode, p.antialias));
      *p.pass = as_pass<acc_t>(*result.tables.back());
    }
  }
  return result;
}

// The views' resolutions, each within the image.
void check_views(const char* op, at::IntArrayRef heights, at::IntArrayRef widths, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(heights.size() == widths.size(), op, ": heights and widths differ in length (", heights.size(),
                    ", ", widths.size(), ")");
  TORCH_CHECK_VALUE(!heights.empty(), op, ": heights and widths must name at least one resolution");
  for (size_t v = 0; v < heights.size(); ++v) {
    TORCH_CHECK_VALUE(heights[v] >= 1 && heights[v] <= height && widths[v] >= 1 && widths[v] <= width, op,
                      ": heights and widths: resolution ", heights[v], "x", widths[v], " (view ", v,
                      ") must lie within the ", height, "x", width, " image (and be >= 1)");
  }
}

void check_options(const char* op, int64_t jitter, double contrast_low, double contrast_high, int64_t seed) {
  TORCH_CHECK_VALUE(jitter >= 0, op, ": jitter must be non-negative, got ", jitter);
  TORCH_CHECK_VALUE(contrast_low <= contrast_high, op, ": contrast must satisfy low <= high, got (", contrast_low,
                    ", ", contrast_high, ")");
  check_seed(op, "seed", seed);
}

bool parse_noise_kind(const char* op, c10::string_view kind) {
  TORCH_CHECK_VALUE(kind == "uniform" || kind == "gaussian", op,
                    ": noise_kind must be one of ('uniform', 'gaussian'), got '", std::string(kind), "'");
  return kind == "gaussian";
}

std::tuple<at::Tensor, at::Tensor> multires_stack_fwd_cpu(const at::Tensor& x_in, at::IntArrayRef heights,
                                                          at::IntArrayRef widths, int64_t jitter, double noise,
                                                          c10::string_view noise_kind, double contrast_low,
                                                          double contrast_high, c10::string_view interpolation,
                                                          bool antialias, bool adjust_contrast, int64_t seed_in,
                                                          const std::optional<at::Tensor>& seed_offset) {
  const char* op = "multires_stack";
  check_kernel_float(op, "x", x_in);
  check_device_type(op, "x", x_in, at::kCPU);
  check_seed(op, "seed", seed_in);
  check_seed_offset(op, seed_offset, "x", x_in);
  const int64_t seed = seed_with_offset(op, seed_in, seed_offset);
  check_rank(op, "x", x_in, 4, "[B, C, H, W]");
  const int64_t batch = x_in.size(0), channels = x_in.size(1), height = x_in.size(2), width = x_in.size(3);
  check_views(op, heights, widths, height, width);
  check_options(op, jitter, contrast_low, contrast_high, seed);
  TORCH_CHECK_VALUE(noise >= 0 && std::isfinite(noise), op, ": noise must be finite and >= 0, got ", noise);
  const bool gaussian = parse_noise_kind(op, noise_kind);
  const Interpolation mode = parse_interpolation(op, interpolation);
  const int64_t num_views = static_cast<int64_t>(heights.size());
  at::Tensor out = at::empty({batch, channels * num_views, height, width}, x_in.options());
  at::Tensor mask = at::empty({batch, channels * num_views, height, (width + 7) / 8}, x_in.options().dtype(at::kByte));
  if (out.numel() == 0) return {out, mask};
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multires_stack_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto views = make_views<acc_t>(heights, widths, batch, channels, height, width, mode, antialias);
    forward_impl<scalar_t>(x, views.views, jitter, static_cast<float>(noise), gaussian,
                           static_cast<float>(contrast_low), static_cast<float>(contrast_high), adjust_contrast,
                           static_cast<uint64_t>(seed), out, mask);
  });
  return {out, mask};
}

at::Tensor multires_stack_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& mask_in, const at::Tensor& x_in,
                                  at::IntArrayRef heights, at::IntArrayRef widths, int64_t jitter,
                                  double contrast_low, double contrast_high, c10::string_view interpolation,
                                  bool antialias, bool adjust_contrast, int64_t seed_in,
                                  const std::optional<at::Tensor>& seed_offset) {
  const char* op = "multires_stack_backward";
  check_kernel_float(op, "grad_out", grad_in);
  check_device_type(op, "grad_out", grad_in, at::kCPU);
  check_seed(op, "seed", seed_in);
  check_seed_offset(op, seed_offset, "grad_out", grad_in);
  const int64_t seed = seed_with_offset(op, seed_in, seed_offset);
  check_rank(op, "grad_out", grad_in, 4, "[B, C * V, H, W]");
  const int64_t num_views = static_cast<int64_t>(heights.size());
  TORCH_CHECK_VALUE(num_views >= 1 && grad_in.size(1) % num_views == 0, op, ": grad_out has ", grad_in.size(1),
                    " channels, not a multiple of the ", num_views, " views");
  const int64_t batch = grad_in.size(0), channels = grad_in.size(1) / num_views, height = grad_in.size(2),
                width = grad_in.size(3);
  check_views(op, heights, widths, height, width);
  check_options(op, jitter, contrast_low, contrast_high, seed);
  const Interpolation mode = parse_interpolation(op, interpolation);
  check_defined(op, "clip_mask", mask_in);
  check_same_device(op, "clip_mask", mask_in, "grad_out", grad_in);
  TORCH_CHECK_VALUE(mask_in.scalar_type() == at::kByte &&
                        mask_in.sizes() == at::IntArrayRef({batch, channels * num_views, height, (width + 7) / 8}),
                    op, ": clip_mask must be a uint8 [", batch, ", ", channels * num_views, ", ", height, ", ",
                    (width + 7) / 8, "] tensor, got ", dtype_name(mask_in.scalar_type()), " ", mask_in.sizes());
  check_defined(op, "x", x_in);
  check_same_device(op, "x", x_in, "grad_out", grad_in);
  TORCH_CHECK_VALUE(x_in.scalar_type() == grad_in.scalar_type() &&
                        x_in.sizes() == at::IntArrayRef({batch, channels, height, width}),
                    op, ": x must be the forward's input, ", dtype_name(grad_in.scalar_type()), " [", batch, ", ",
                    channels, ", ", height, ", ", width, "], got ", dtype_name(x_in.scalar_type()), " ",
                    x_in.sizes());
  at::Tensor dx = at::empty({batch, channels, height, width}, grad_in.options());
  if (dx.numel() == 0) return dx;
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor mask = mask_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "multires_stack_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto views = make_views<acc_t>(heights, widths, batch, channels, height, width, mode, antialias);
    backward_impl<scalar_t>(grad, mask, x, views.views, jitter, static_cast<float>(contrast_low),
                            static_cast<float>(contrast_high), adjust_contrast, static_cast<uint64_t>(seed), dx);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("multires_stack_fwd_kernel", &multires_stack_fwd_cpu);
  m.impl("multires_stack_bwd_kernel", &multires_stack_bwd_cpu);
}

}  // namespace robustkernels
