// The banded resize tables of resize_tables.h, read off ATen's resize of the identity basis.
#include "resize_tables.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace robustkernels {

Interpolation parse_interpolation(const char* op, c10::string_view name) {
  if (name == "bilinear") return Interpolation::kBilinear;
  if (name == "bicubic") return Interpolation::kBicubic;
  TORCH_CHECK_VALUE(name == "area", op, ": interpolation must be one of ('bilinear', 'bicubic', 'area'), got '",
                    std::string(name), "'");
  return Interpolation::kArea;
}

namespace {

// F.interpolate(images, size, mode, align_corners=False, antialias) (area: adaptive average pooling).
at::Tensor resize(const at::Tensor& images, at::IntArrayRef size, Interpolation mode, bool antialias) {
  switch (mode) {
    case Interpolation::kArea:
      return at::adaptive_avg_pool2d(images, size);
    case Interpolation::kBilinear:
      return antialias ? at::_upsample_bilinear2d_aa(images, size, false) : at::upsample_bilinear2d(images, size, false);
    default:
      return antialias ? at::_upsample_bicubic2d_aa(images, size, false) : at::upsample_bicubic2d(images, size, false);
  }
}

// R [n_out, n_in] in float64, as resize_tables.resize_matrix builds it.
at::Tensor resize_matrix(int64_t n_in, int64_t n_out, Interpolation mode, bool antialias) {
  // Two identical columns, not one: torch 2.13's antialiased CPU resize of width-1 images
  // returns the first output row everywhere.
  const at::Tensor basis =
      at::eye(n_in, at::TensorOptions().dtype(at::kDouble)).reshape({n_in, 1, n_in, 1}).expand({n_in, 1, n_in, 2});
  const at::Tensor probe = resize(basis.contiguous(), {n_out, 2}, mode, antialias);  // [n_in, 1, n_out, 2]
  return probe.select(3, 0).select(1, 0).t().contiguous();
}

// Row o's non-zeros lie in start[o] .. start[o] + taps - 1, taps the widest row's span; narrower
// rows get zero weights, their windows shifted left where they would run past the last input.
ResizeTable banded(const at::Tensor& matrix) {
  const int64_t n_out = matrix.size(0), n_in = matrix.size(1);
  const double* r = matrix.const_data_ptr<double>();
  std::vector<int64_t> first(n_out, 0);
  int64_t taps = 1;
  for (int64_t o = 0; o < n_out; ++o) {
    int64_t lo = 0, hi = n_in - 1;
    while (lo < n_in - 1 && r[o * n_in + lo] == 0) ++lo;
    while (hi > 0 && r[o * n_in + hi] == 0) --hi;
    first[o] = lo;
    taps = std::max(taps, hi - lo + 1);
  }
  ResizeTable table{taps, std::vector<int32_t>(n_out), std::vector<double>(n_out * taps),
                    std::vector<float>(n_out * taps)};
  for (int64_t o = 0; o < n_out; ++o) {
    const int64_t start = std::min(first[o], n_in - taps);
    table.start[o] = static_cast<int32_t>(start);
    for (int64_t t = 0; t < taps; ++t) {
      table.weight[o * taps + t] = r[o * n_in + start + t];
      table.weight32[o * taps + t] = static_cast<float>(r[o * n_in + start + t]);
    }
  }
  return table;
}

// Enough for every (size, view size, mode) a run uses; a full cache starts again (tables in use
// stay alive through their shared pointers).
constexpr size_t kMaxCachedTables = 256;

}  // namespace

std::shared_ptr<const ResizeTable> resize_table(int64_t n_in, int64_t n_out, Interpolation mode, bool antialias) {
  using Key = std::tuple<int64_t, int64_t, Interpolation, bool>;
  static std::mutex lock;
  static std::map<Key, std::shared_ptr<const ResizeTable>> cache;
  const Key key{n_in, n_out, mode, antialias};
  {
    std::lock_guard<std::mutex> guard(lock);
    const auto found = cache.find(key);
    if (found != cache.end()) return found->second;
  }
  auto table = std::make_shared<const ResizeTable>(banded(resize_matrix(n_in, n_out, mode, antialias)));
  std::lock_guard<std::mutex> guard(lock);
  if (cache.size() >= kMaxCachedTables) cache.clear();
  cache.emplace(key, table);
  return table;
}

}  // namespace robustkernels
