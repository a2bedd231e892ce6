// The steps of the CPU multires_stack kernels on one image plane (csrc/cpu/multires_stack.cpp
// runs the recipe with them): the per-image contrast and shifts from Philox, the banded resize
// passes and their transposes, the noise, the circular shift and the clip with its bit mask.
// Always inlined where the loops run hot, so that each instruction-set variant compiles them.
#pragma once

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>

#include "../philox.h"
#include "multiversion.h"
#include "normal_block.h"

namespace robustkernels {
namespace multires {

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
inline acc_t load_image(const scalar_t* image, int64_t channels, int64_t plane, acc_t* xs, acc_t* mean) {
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

inline ImageParams image_params(uint64_t seed, uint64_t counter, int64_t jitter, float low, float high,
                         int64_t height, int64_t width) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint64_t span = 2 * static_cast<uint64_t>(jitter) + 1;
  const int64_t dy = static_cast<int64_t>((c1 * span) >> 32) - jitter;
  const int64_t dx = static_cast<int64_t>((c2 * span) >> 32) - jitter;
  const float spread = high - low;
  return {low + spread * uint32_to_uniform(c0), ((dy % height) + height) % height, ((dx % width) + width) % width};
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

// plane[i] += amplitude * noise(first + i) for a row-major rows x cols plane, or,
// with `transposed`, for the same plane stored column-major; noise uniform or normal.
template <typename acc_t>
inline void add_noise(acc_t* plane, int64_t rows, int64_t cols, bool transposed, uint64_t seed, uint64_t first,
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

}  // namespace multires
}  // namespace robustkernels
