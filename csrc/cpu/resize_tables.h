// Banded 1-D resize tables of F.interpolate for the CPU multires_stack kernels (the C++ twin of
// robustkernels/ops/resize_tables.py, which builds the Triton kernels' dense tables).
//
// Every mode offered (bilinear, bicubic, area; align_corners=False; antialias for the first two)
// is separable and linear, so a resize of n_in samples to n_out is a matrix R [n_out, n_in]. R
// is read off ATen's own resize of the identity basis in float64, so the kernels follow torch's
// conventions exactly (border clamping, antialias filter widths, area's uneven windows). Row o is
// stored as weight[o, 0 .. taps) at inputs start[o] .. start[o] + taps - 1.
#pragma once

#include <c10/util/string_view.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace robustkernels {

enum class Interpolation { kBilinear, kBicubic, kArea };

// The mode named `name` ("bilinear", "bicubic" or "area"); a ValueError naming `interpolation` else.
Interpolation parse_interpolation(const char* op, c10::string_view name);

struct ResizeTable {
  int64_t taps;
  std::vector<int32_t> start;   // [n_out]
  std::vector<double> weight;   // [n_out, taps]
  std::vector<float> weight32;  // the same, rounded once to float32
};

// The table of one 1-D resize, built on first use and cached for the process (thread-safe).
std::shared_ptr<const ResizeTable> resize_table(int64_t n_in, int64_t n_out, Interpolation mode, bool antialias);

}  // namespace robustkernels
