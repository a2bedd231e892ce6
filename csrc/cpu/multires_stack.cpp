// CPU kernels of the multi-resolution input stack of the multi-resolution
// self-ensemble (Fort & Lakshminarayanan, "Ensemble everything everywhere").
// The recipe and the random streams are specified in
// robustkernels/reference/multires_stack.py; per image b and view v:
//   A   = clamp(c * x + (1 - c) * m, 0, 1), m = mean_HW(grey(x))   (adjust_contrast; else A = x)
//   R   = roll(c * A + (1 - c) * mean_channels(A), (dy, dx))
//   up  = Resize_up(Resize_down(R) + noise_low) + noise_high   (no resizes at full size)
//   out = clip(up, 0, 1), plus one bit per element: 0 <= up <= 1 (where the clip
//         passes the gradient); the backward needs it, (c, dy, dx) and x (where A's clamp passed).
// Each resize is separable; each 1-D pass is a banded matrix given as tables
// (start[o], weight[o, t]): output o reads inputs start[o] .. start[o] + taps - 1.
// The tables come from the Python op (F.interpolate's own weights), so every
// interpolation mode is the same code here. One task per image: the channel mean
// and the image stay in cache across the views.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../arg_checks.h"
#include "../philox.h"
#include "multiversion.h"
#include "normal_block.h"


namespace robustkernels {
namespace {

constexpr int kTablesPerView = 4;  // down rows, down columns, up rows, up columns

template <typename acc_t>
struct Pass {
  const int32_t* start;
  const acc_t* weight;
  int64_t taps;
};

template <typename acc_t>
struct View {
  int64_t height, width;  // low resolution
  bool resized;
  Pass<acc_t> down_y, down_x, up_y, up_x;
  uint64_t low_offset, high_offset;
};

// torchvision's grey level (rgb_to_grayscale) for 3 channels, the channel mean otherwise
template <typename acc_t>
acc_t grey_weight(int64_t channels, int64_t ch) {
  static constexpr double kRgbGrey[3] = {0.2989, 0.587, 0.114};  // rounded once, to acc_t
  return channels == 3 ? static_cast<acc_t>(kRgbGrey[ch]) : acc_t(1) / static_cast<acc_t>(channels);
}

// xs[ch * plane + p] = image[...] in acc_t; returns adjust_contrast's m (the mean grey level) and
// fills `mean` with the channel mean.
template <typename scalar_t, typename acc_t>
acc_t load_image(const scalar_t* image, int64_t channels, int64_t plane, acc_t* xs, acc_t* mean) {
  std::fill(mean, mean + plane, acc_t(0));
  acc_t grey = 0;
  for (int64_t ch = 0; ch < channels; ++ch) {
    acc_t sum = 0;
    for (int64_t p = 0; p < plane; ++p) {
      const acc_t value = static_cast<acc_t>(image[ch * plane + p]);
      xs[ch * plane + p] = value;
      mean[p] += value;
      sum += value;
    }
    grey += grey_weight<acc_t>(channels, ch) * sum;
  }
  for (int64_t p = 0; p < plane; ++p) mean[p] /= static_cast<acc_t>(channels);
  return grey / static_cast<acc_t>(plane);
}

struct ImageParams {
  float contrast;
  int64_t shift_y, shift_x;  // already reduced into [0, H) and [0, W)
};

ImageParams image_params(uint64_t seed, uint64_t counter, int64_t jitter, float low, float high,
                         int64_t height, int64_t width) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint64_t span = 2 * static_cast<uint64_t>(jitter) + 1;
  const int64_t dy = static_cast<int64_t>((c1 * span) >> 32) - jitter;
  const int64_t dx = static_cast<int64_t>((c2 * span) >> 32) - jitter;
  const float spread = high - low;
  return {low + spread * uint32_to_uniform(c0), ((dy % height) + height) % height, ((dx % width) + width) % width};
}

void check_table(const at::Tensor& start, const at::Tensor& weight, at::ScalarType acc, int64_t n_out,
                 int64_t n_in, const char* name) {
  TORCH_CHECK_VALUE(start.device().is_cpu() && weight.device().is_cpu(),
                    "multires_stack: starts and weights must be CPU tensors (", name, ")");
  TORCH_CHECK_VALUE(start.scalar_type() == at::kInt && start.dim() == 1 && start.numel() == n_out &&
                        start.is_contiguous(),
                    "multires_stack: starts (", name, ") must be a contiguous int32 [", n_out, "] tensor, got ",
                    dtype_name(start.scalar_type()), " ", start.sizes());
  TORCH_CHECK_VALUE(weight.scalar_type() == acc && weight.dim() == 2 && weight.size(0) == n_out &&
                        weight.size(1) >= 1 && weight.size(1) <= n_in && weight.is_contiguous(),
                    "multires_stack: weights (", name, ") must be a contiguous ", dtype_name(acc), " [", n_out,
                    ", taps <= ", n_in, "] tensor, got ", dtype_name(weight.scalar_type()), " ", weight.sizes());
  const int32_t* s = start.data_ptr<int32_t>();
  const int64_t taps = weight.size(1);
  for (int64_t o = 0; o < n_out; ++o) {
    TORCH_CHECK_VALUE(s[o] >= 0 && s[o] + taps <= n_in, "multires_stack: starts (", name, "): start[", o,
                      "] = ", s[o], " reads past the ", n_in, " inputs");
  }
}

template <typename acc_t>
Pass<acc_t> as_pass(const at::Tensor& start, const at::Tensor& weight) {
  return {start.data_ptr<int32_t>(), weight.data_ptr<acc_t>(), weight.size(1)};
}

template <typename acc_t>
std::vector<View<acc_t>> make_views(at::IntArrayRef heights, at::IntArrayRef widths, at::TensorList starts,
                                    at::TensorList weights, at::IntArrayRef noise_offsets, int64_t height,
                                    int64_t width, at::ScalarType acc) {
  const int64_t num_views = static_cast<int64_t>(heights.size());
  TORCH_CHECK_VALUE(num_views >= 1, "multires_stack: at least one resolution is needed");
  TORCH_CHECK_VALUE(static_cast<int64_t>(widths.size()) == num_views, "multires_stack: heights and widths differ in length");
  TORCH_CHECK_VALUE(static_cast<int64_t>(starts.size()) == kTablesPerView * num_views &&
                        static_cast<int64_t>(weights.size()) == kTablesPerView * num_views,
                    "multires_stack: starts and weights must hold ", kTablesPerView * num_views,
                    " tables (four per view), got ", starts.size(), " and ", weights.size());
  TORCH_CHECK_VALUE(noise_offsets.empty() || static_cast<int64_t>(noise_offsets.size()) == 2 * num_views,
                    "multires_stack: noise_offsets must hold the ", 2 * num_views, " noise offsets, got ",
                    noise_offsets.size());
  std::vector<View<acc_t>> views(num_views);
  for (int64_t v = 0; v < num_views; ++v) {
    View<acc_t>& view = views[v];
    view.height = heights[v];
    view.width = widths[v];
    TORCH_CHECK_VALUE(view.height >= 1 && view.height <= height && view.width >= 1 && view.width <= width,
                      "multires_stack: heights and widths: resolution ", view.height, "x", view.width,
                      " must lie in 1..", height, " x 1..", width);
    view.resized = view.height != height || view.width != width;
    view.low_offset = noise_offsets.empty() ? 0 : static_cast<uint64_t>(noise_offsets[2 * v]);
    view.high_offset = noise_offsets.empty() ? 0 : static_cast<uint64_t>(noise_offsets[2 * v + 1]);
    if (!view.resized) continue;
    const int64_t sizes[kTablesPerView][2] = {
        {view.height, height}, {view.width, width}, {height, view.height}, {width, view.width}};
    const char* names[kTablesPerView] = {"down-rows", "down-columns", "up-rows", "up-columns"};
    Pass<acc_t>* passes[kTablesPerView] = {&view.down_y, &view.down_x, &view.up_y, &view.up_x};
    for (int t = 0; t < kTablesPerView; ++t) {
      const at::Tensor& s = starts[kTablesPerView * v + t];
      const at::Tensor& w = weights[kTablesPerView * v + t];
      check_table(s, w, acc, sizes[t][0], sizes[t][1], names[t]);
      *passes[t] = as_pass<acc_t>(s, w);
    }
  }
  return views;
}

// dst[o, :] = sum_t w[o, t] * src[start[o] + t, :] for rows of `cols` elements.
template <typename acc_t>
RK_ALWAYS_INLINE inline void rows_pass(const Pass<acc_t>& pass, int64_t n_out, const acc_t* src, acc_t* dst, int64_t cols) {
  for (int64_t o = 0; o < n_out; ++o) {
    acc_t* out = dst + o * cols;
    std::fill(out, out + cols, acc_t(0));
    const acc_t* w = pass.weight + o * pass.taps;
    for (int64_t t = 0; t < pass.taps; ++t) {
      const acc_t* in = src + (pass.start[o] + t) * cols;
      const acc_t wt = w[t];
      for (int64_t c = 0; c < cols; ++c) out[c] += wt * in[c];
    }
  }
}

// Transpose of rows_pass: dsrc[start[o] + t, :] += w[o, t] * ddst[o, :] (dsrc zeroed here).
template <typename acc_t>
RK_ALWAYS_INLINE inline void rows_pass_t(const Pass<acc_t>& pass, int64_t n_out, int64_t n_in, const acc_t* ddst, acc_t* dsrc, int64_t cols) {
  std::fill(dsrc, dsrc + n_in * cols, acc_t(0));
  for (int64_t o = 0; o < n_out; ++o) {
    const acc_t* g = ddst + o * cols;
    const acc_t* w = pass.weight + o * pass.taps;
    for (int64_t t = 0; t < pass.taps; ++t) {
      acc_t* out = dsrc + (pass.start[o] + t) * cols;
      const acc_t wt = w[t];
      for (int64_t c = 0; c < cols; ++c) out[c] += wt * g[c];
    }
  }
}

// dst[c, r] = src[r, c] for a rows x cols block.
template <typename acc_t>
RK_ALWAYS_INLINE inline void transpose(const acc_t* src, int64_t rows, int64_t cols, acc_t* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

// plane[i] += amplitude * noise(first + i), noise uniform or normal, for a plane of n elements.
// plane[i] += amplitude * noise(first + i) for a row-major rows x cols plane, or,
// with `transposed`, for the same plane stored column-major; noise uniform or normal.
template <typename acc_t>
void add_noise(acc_t* plane, int64_t rows, int64_t cols, bool transposed, uint64_t seed, uint64_t first,
               float amplitude, bool gaussian) {
  alignas(64) float block[kNormalBlock];
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; i += kNormalBlock) {
    const int64_t count = std::min<int64_t>(kNormalBlock, n - i);
    if (gaussian) {
      fill_normal_block(seed, first + i, count, block);
    } else {
      fill_uniform_block(seed, first + i, count, block);
    }
    if (!transposed) {
      for (int64_t j = 0; j < count; ++j) plane[i + j] += static_cast<acc_t>(amplitude * block[j]);
    } else {
      for (int64_t j = 0; j < count; ++j) {
        const int64_t e = i + j;
        plane[(e % cols) * rows + e / cols] += static_cast<acc_t>(amplitude * block[j]);
      }
    }
  }
}

// dst[y, w] = f(src[(y - dy) % H, (w - dx) % W]) with dy, dx in [0, H) x [0, W): per row two contiguous runs.
template <typename F>
RK_ALWAYS_INLINE inline void for_each_rolled(int64_t height, int64_t width, int64_t dy, int64_t dx, F&& f) {
  for (int64_t y = 0; y < height; ++y) {
    const int64_t ys = y >= dy ? y - dy : y - dy + height;
    f(y, ys, 0, width - dx, dx);          // dst columns 0 .. dx - 1 read src columns W - dx ..
    f(y, ys, dx, 0, width - dx);          // dst columns dx .. W - 1 read src columns 0 ..
  }
}

template <typename scalar_t>
struct ForwardJob {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  scalar_t* out;
  uint8_t* mask;
  const View<acc_t>* views;
  int64_t num_views, batch, channels, height, width, jitter;
  float noise, contrast_low, contrast_high;
  bool gaussian, adjust_contrast;
  uint64_t seed;
};

template <typename scalar_t>
struct BackwardJob {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* grad;
  const uint8_t* mask;
  const scalar_t* x;
  scalar_t* dx;
  const View<acc_t>* views;
  int64_t num_views, batch, channels, height, width, jitter;
  float contrast_low, contrast_high;
  bool adjust_contrast;
  uint64_t seed;
};

// dst = clip(u, 0, 1) and bit k of bits[j] = (0 <= u[8 j + k] <= 1) for one row.
template <typename scalar_t, typename acc_t>
RK_ALWAYS_INLINE inline void clip_row(const acc_t* u, int64_t width, scalar_t* dst, uint8_t* bits) {
  for (int64_t w = 0; w < width; ++w) dst[w] = static_cast<scalar_t>(std::min(std::max(u[w], acc_t(0)), acc_t(1)));
  const int64_t whole = width / 8;
  for (int64_t byte = 0; byte < whole; ++byte) {
    const acc_t* u8 = u + 8 * byte;
    unsigned packed = 0;
    for (int k = 0; k < 8; ++k) packed |= static_cast<unsigned>((u8[k] >= acc_t(0)) & (u8[k] <= acc_t(1))) << k;
    bits[byte] = static_cast<uint8_t>(packed);
  }
  if (whole * 8 < width) {
    unsigned packed = 0;
    for (int64_t w = whole * 8; w < width; ++w)
      packed |= static_cast<unsigned>((u[w] >= acc_t(0)) & (u[w] <= acc_t(1))) << (w - whole * 8);
    bits[whole] = static_cast<uint8_t>(packed);
  }
}

// g = bits ? grad : 0 for one row (a select, so a non-finite gradient where the clip clipped gives 0).
template <typename scalar_t, typename acc_t>
RK_ALWAYS_INLINE inline void unmask_row(const scalar_t* grad, const uint8_t* bits, int64_t width, acc_t* g) {
  for (int64_t byte = 0; 8 * byte < width; ++byte) {
    const unsigned packed = bits[byte];
    const int64_t n = std::min<int64_t>(8, width - 8 * byte);
    for (int64_t k = 0; k < n; ++k)
      g[8 * byte + k] = ((packed >> k) & 1u) ? static_cast<acc_t>(grad[8 * byte + k]) : acc_t(0);
  }
}

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

bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_image(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "multires_stack: ", name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK_VALUE(supported_dtype(x.scalar_type()), "multires_stack: ", name,
                    " must be float32, float64, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 4, "multires_stack: ", name, " must be [B, C, H, W], got ", x.sizes());
}

int64_t checked_seed(int64_t seed) {
  TORCH_CHECK_VALUE(seed >= 0, "multires_stack: seed must be non-negative, got ", seed);
  return seed;
}

bool parse_noise_kind(c10::string_view kind) {
  TORCH_CHECK_VALUE(kind == "uniform" || kind == "gaussian",
                    "multires_stack: noise_kind must be 'uniform' or 'gaussian', got '", std::string(kind), "'");
  return kind == "gaussian";
}

std::tuple<at::Tensor, at::Tensor> multires_stack_fwd_cpu(const at::Tensor& x_in, at::IntArrayRef heights,
                                                          at::IntArrayRef widths, at::TensorList starts,
                                                          at::TensorList weights, at::IntArrayRef noise_offsets,
                                                          int64_t jitter, double noise, c10::string_view noise_kind,
                                                          double contrast_low, double contrast_high,
                                                          bool adjust_contrast, int64_t seed) {
  check_image(x_in, "x");
  TORCH_CHECK_VALUE(jitter >= 0, "multires_stack: jitter must be non-negative, got ", jitter);
  const bool gaussian = parse_noise_kind(noise_kind);
  const uint64_t key = static_cast<uint64_t>(checked_seed(seed));
  const at::Tensor x = x_in.contiguous();
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t num_views = static_cast<int64_t>(heights.size());
  at::Tensor out = at::empty({batch, channels * num_views, height, width}, x.options());
  at::Tensor mask = at::empty({batch, channels * num_views, height, (width + 7) / 8}, x.options().dtype(at::kByte));
  TORCH_CHECK_VALUE(noise == 0.0 || static_cast<int64_t>(noise_offsets.size()) == 2 * num_views,
                    "multires_stack: noise_offsets must hold the ", 2 * num_views, " noise offsets, got ",
                    noise_offsets.size());
  for (int64_t offset : noise_offsets) {
    TORCH_CHECK_VALUE(offset >= 0, "multires_stack: noise_offsets must be non-negative, got ", offset);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multires_stack_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto views =
        make_views<acc_t>(heights, widths, starts, weights, noise_offsets, height, width, acc_dtype(x.scalar_type()));
    if (batch * channels * height * width == 0) return;
    forward_impl<scalar_t>(x, views, jitter, static_cast<float>(noise), gaussian, static_cast<float>(contrast_low),
                           static_cast<float>(contrast_high), adjust_contrast, key, out, mask);
  });
  return {out, mask};
}

at::Tensor multires_stack_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& mask_in, const at::Tensor& x_in,
                                  at::IntArrayRef heights, at::IntArrayRef widths, at::TensorList starts,
                                  at::TensorList weights, int64_t jitter, double contrast_low,
                                  double contrast_high, bool adjust_contrast, int64_t seed) {
  check_image(grad_in, "grad_out");
  TORCH_CHECK_VALUE(jitter >= 0, "multires_stack: jitter must be non-negative, got ", jitter);
  const uint64_t key = static_cast<uint64_t>(checked_seed(seed));
  const int64_t num_views = static_cast<int64_t>(heights.size());
  TORCH_CHECK_VALUE(num_views >= 1 && grad_in.size(1) % num_views == 0, "multires_stack: grad_out has ",
                    grad_in.size(1), " channels, not a multiple of the ", num_views, " views");
  const int64_t batch = grad_in.size(0), channels = grad_in.size(1) / num_views, height = grad_in.size(2),
                width = grad_in.size(3);
  TORCH_CHECK_VALUE(mask_in.device().is_cpu() && mask_in.scalar_type() == at::kByte &&
                        mask_in.sizes() == at::IntArrayRef({batch, channels * num_views, height, (width + 7) / 8}),
                    "multires_stack: clip_mask must be a CPU uint8 [", batch, ", ", channels * num_views, ", ", height,
                    ", ", (width + 7) / 8, "] tensor, got ", mask_in.scalar_type(), " ", mask_in.sizes());
  check_image(x_in, "x");
  TORCH_CHECK_VALUE(x_in.scalar_type() == grad_in.scalar_type() &&
                        x_in.sizes() == at::IntArrayRef({batch, channels, height, width}),
                    "multires_stack: x must be the forward's input, ", grad_in.scalar_type(), " [", batch, ", ",
                    channels, ", ", height, ", ", width, "], got ", x_in.scalar_type(), " ", x_in.sizes());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor mask = mask_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  at::Tensor dx = at::empty({batch, channels, height, width}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "multires_stack_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto views =
        make_views<acc_t>(heights, widths, starts, weights, {}, height, width, acc_dtype(grad.scalar_type()));
    if (dx.numel() == 0) return;
    backward_impl<scalar_t>(grad, mask, x, views, jitter, static_cast<float>(contrast_low),
                            static_cast<float>(contrast_high), adjust_contrast, key, dx);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("multires_stack_fwd_kernel", &multires_stack_fwd_cpu);
  m.impl("multires_stack_bwd_kernel", &multires_stack_bwd_cpu);
}

}  // namespace robustkernels
