// CPU kernels of routed multi-path layers (path_conv2d, path_linear):
//  - path_weights_fwd: every path's effective weight in one pass,
//      W'_p = M_p * (W_s(p) + lam_p * alpha_p * std(W_s(p)) * eta(seed_p)),
//    with s(p) = p for a bank of P weights or 0 for one weight shared by all paths;
//  - path_weights_bwd: dW_s = sum over the paths p on entry s of M_p * dW'_p, and
//    dalpha_p, regenerating the noise;
//  - route_sort: a stable counting sort of the samples by path.
// Paths whose count is 0 cost nothing: their W' and dalpha are zero, their dW' is
// never read.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <vector>

#include "../arg_checks.h"
#include "../noisy_weight_checks.h"
#include "cpu_empty.h"
#include "weight_noise.h"

namespace robustkernels {
namespace {

// Shapes of one call: P paths over S weight entries of C rows of `inner` elements.
struct PathLayout {
  int64_t paths;
  int64_t entries;
  int64_t rows;
  int64_t inner;
  int64_t alpha_size;  // 1 (layerwise), rows (channelwise) or rows * inner (elementwise); 0 without alpha
  int64_t numel() const { return rows * inner; }
  int64_t entry_of(int64_t path) const { return entries == 1 ? 0 : path; }
};

// weight is named `weight_name` (the backward passes grad_out).
PathLayout check_path_args(const char* op, const char* weight_name, const at::Tensor& weight, int64_t bank_paths,
                           const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& alpha,
                           at::ArrayRef<double> lams, at::ArrayRef<int64_t> seeds,
                           const std::optional<at::Tensor>& counts) {
  check_kernel_float(op, weight_name, weight);
  check_device_type(op, weight_name, weight, at::kCPU);
  TORCH_CHECK_VALUE(weight.dim() >= 2 && weight.numel() > 0, op, ": ", weight_name,
                    " must be a non-empty [S, C_out, ...] bank, got shape ", weight.sizes());
  const int64_t paths = static_cast<int64_t>(lams.size());
  TORCH_CHECK_VALUE(paths >= 1, op, ": lams must hold one value per path, got none");
  TORCH_CHECK_VALUE(static_cast<int64_t>(seeds.size()) == paths, op, ": seeds must hold one value per path (",
                    paths, "), got ", seeds.size());
  const int64_t entries = weight.size(0);
  TORCH_CHECK_VALUE(entries == 1 || entries == paths, op, ": ", weight_name, " must hold 1 or ", paths,
                    " (one per path) entries, got ", entries);
  TORCH_CHECK_VALUE(bank_paths == paths, op, ": the bank has ", bank_paths, " paths but lams hold ", paths);
  for (int64_t seed : seeds) check_seed(op, "seeds", seed);
  PathLayout layout{paths, entries, weight.size(1), weight.numel() / entries / weight.size(1), 0};
  std::vector<int64_t> path_shape = weight.sizes().vec();
  path_shape[0] = paths;
  if (mask.has_value()) {
    check_dtype(op, "mask", *mask, at::kBool);
    check_same_device(op, "mask", *mask, weight_name, weight);
    check_shape(op, "mask", *mask, path_shape);
  }
  bool noisy = false;
  for (double lam : lams) noisy = noisy || lam != 0.0;
  if (alpha.has_value()) {
    check_same_dtype(op, "alpha", *alpha, weight_name, weight);
    check_same_device(op, "alpha", *alpha, weight_name, weight);
    TORCH_CHECK_VALUE(alpha->dim() == 2 && alpha->size(0) == paths, op, ": alpha must be [", paths,
                      ", A], got shape ", alpha->sizes());
    const int64_t a = alpha->size(1);
    TORCH_CHECK_VALUE(a == 1 || a == layout.rows || a == layout.numel(), op, ": alpha must hold 1, ", layout.rows,
                      " or ", layout.numel(), " values per path, got ", a);
    layout.alpha_size = a;
  } else {
    TORCH_CHECK_VALUE(!noisy, op, ": alpha is required when a path has lam != 0");
  }
  if (counts.has_value()) {
    check_dtype(op, "counts", *counts, at::kLong);
    check_same_device(op, "counts", *counts, weight_name, weight);
    TORCH_CHECK_VALUE(counts->dim() == 1 && counts->size(0) == paths, op, ": counts must be [", paths, "], got ",
                      counts->sizes());
  }
  return layout;
}

std::vector<bool> active_paths(const std::optional<at::Tensor>& counts, int64_t paths) {
  std::vector<bool> active(paths, true);
  if (counts.has_value()) {
    const at::Tensor c = counts->contiguous();
    const int64_t* data = c.const_data_ptr<int64_t>();
    for (int64_t p = 0; p < paths; ++p) active[p] = data[p] > 0;
  }
  return active;
}

std::tuple<at::Tensor, at::Tensor> path_weights_fwd_cpu(const at::Tensor& weight_in,
                                                        const std::optional<at::Tensor>& mask_in,
                                                        const std::optional<at::Tensor>& alpha_in,
                                                        at::ArrayRef<double> lams, at::ArrayRef<int64_t> seeds_in,
                                                        const std::optional<at::Tensor>& counts,
                                                        const std::optional<at::Tensor>& seed_offset) {
  const PathLayout L = check_path_args("path_weights", "weight", weight_in, static_cast<int64_t>(lams.size()), mask_in,
                                       alpha_in, lams, seeds_in, counts);
  check_seed_offset("path_weights", seed_offset, "weight", weight_in);
  const std::vector<int64_t> shifted = seeds_with_offset("path_weights", seeds_in, seed_offset);
  const at::ArrayRef<int64_t> seeds = seed_offset.has_value() ? at::ArrayRef<int64_t>(shifted) : seeds_in;
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const at::Tensor alpha = alpha_in.has_value() ? alpha_in->contiguous() : at::Tensor();
  const std::vector<bool> active = active_paths(counts, L.paths);
  std::vector<int64_t> out_shape = weight.sizes().vec();
  out_shape[0] = L.paths;
  at::Tensor out = at::empty(out_shape, weight.options());
  const auto sigma_type = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<double> sigma(L.entries, 0.0);
  const int64_t n = L.numel();
  const bool* m = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "path_weights_fwd", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* a = alpha.defined() ? alpha.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // std(W_s) only for the entries a noisy, used path reads
    std::vector<bool> need_sigma(L.entries, false);
    for (int64_t p = 0; p < L.paths; ++p) {
      if (active[p] && lams[p] != 0.0) need_sigma[L.entry_of(p)] = true;
    }
    for (int64_t s = 0; s < L.entries; ++s) {
      if (need_sigma[s]) sigma[s] = weight_std(w + s * n, n);
    }
    at::parallel_for(0, L.paths * n, kGrain, [&](int64_t begin, int64_t end) {
      // rows of the flattened [P * C, inner] output: path p = row / C
      for_each_row_piece(begin, end, L.inner, [&](int64_t row, int64_t piece_begin, int64_t piece_end) {
        const int64_t p = row / L.rows;
        const int64_t local = piece_begin - p * n;  // element index within the path's weight
        const int64_t count = piece_end - piece_begin;
        scalar_t* ob = o + piece_begin;
        if (!active[p]) {
          std::fill(ob, ob + count, scalar_t(0));
          return;
        }
        const scalar_t* wb = w + L.entry_of(p) * n + local;
        const bool* mb = m == nullptr ? nullptr : m + piece_begin;
        if (lams[p] == 0.0) {
          for (int64_t j = 0; j < count; ++j) ob[j] = (mb == nullptr || mb[j]) ? wb[j] : scalar_t(0);
          return;
        }
        const opmath_t scale = static_cast<opmath_t>(lams[p] * sigma[L.entry_of(p)]);
        const scalar_t* ap = a + p * L.alpha_size;
        const bool elementwise = L.alpha_size == n && n > 1;
        const opmath_t row_alpha = static_cast<opmath_t>(ap[L.alpha_size == 1 ? 0 : (row - p * L.rows)]);
        for_each_noise_block(seeds[p], local, local + count, [&](int64_t start, int64_t block, const float* eta) {
          const int64_t off = start - local;
          for (int64_t j = 0; j < block; ++j) {
            const opmath_t alpha_j = elementwise ? static_cast<opmath_t>(ap[start + j]) : row_alpha;
            const opmath_t value =
                static_cast<opmath_t>(wb[off + j]) + scale * alpha_j * static_cast<opmath_t>(eta[j]);
            ob[off + j] = (mb == nullptr || mb[off + j]) ? static_cast<scalar_t>(value) : scalar_t(0);
          }
        });
      });
    });
  });
  at::Tensor sigma_out = at::empty({L.entries}, weight.options().dtype(at::kDouble));
  std::copy(sigma.begin(), sigma.end(), sigma_out.mutable_data_ptr<double>());
  return {out, sigma_out.to(sigma_type)};
}

std::tuple<at::Tensor, at::Tensor> path_weights_bwd_cpu(const at::Tensor& grad_in, int64_t entries,
                                                        const std::optional<at::Tensor>& mask_in,
                                                        const std::optional<at::Tensor>& alpha_in,
                                                        const at::Tensor& sigma_in, at::ArrayRef<double> lams,
                                                        at::ArrayRef<int64_t> seeds_in,
                                                        const std::optional<at::Tensor>& counts,
                                                        bool need_alpha_grad,
                                                        const std::optional<at::Tensor>& seed_offset) {
  const char* op = "path_weights_backward";
  const PathLayout G = check_path_args(op, "grad_out", grad_in, static_cast<int64_t>(lams.size()), mask_in, alpha_in,
                                       lams, seeds_in, counts);
  check_seed_offset(op, seed_offset, "grad_out", grad_in);
  const std::vector<int64_t> shifted = seeds_with_offset(op, seeds_in, seed_offset);
  const at::ArrayRef<int64_t> seeds = seed_offset.has_value() ? at::ArrayRef<int64_t>(shifted) : seeds_in;
  // dW' holds one entry per path, whatever the bank shares.
  TORCH_CHECK_VALUE(G.entries == G.paths, op, ": grad_out must hold one entry per path (", G.paths, "), got ",
                    G.entries);
  TORCH_CHECK_VALUE(entries == 1 || entries == G.paths, op, ": entries must be 1 or ", G.paths, ", got ", entries);
  check_kernel_float(op, "sigma", sigma_in);
  check_same_device(op, "sigma", sigma_in, "grad_out", grad_in);
  check_shape(op, "sigma", sigma_in, {entries});
  const PathLayout L{G.paths, entries, G.rows, G.inner, G.alpha_size};
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const at::Tensor sigma_t = sigma_in.to(at::kDouble).contiguous();
  const double* sigma = sigma_t.const_data_ptr<double>();
  const std::vector<bool> active = active_paths(counts, L.paths);
  const int64_t n = L.numel();
  const bool* m = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;
  std::vector<int64_t> entry_shape = grad.sizes().vec();
  entry_shape[0] = entries;
  at::Tensor grad_weight = at::empty(entry_shape, grad.options());
  const bool alpha_grad = need_alpha_grad && L.alpha_size > 0;
  at::Tensor grad_alpha = alpha_grad ? at::zeros({L.paths, L.alpha_size}, grad.options()) : at::empty({0}, grad.options());
  // per (path, row) partials of dalpha, combined in a fixed order (thread-count independent)
  std::vector<double> partial(alpha_grad ? L.paths * L.rows : 0, 0.0);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "path_weights_bwd", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
    scalar_t* ga = alpha_grad ? grad_alpha.mutable_data_ptr<scalar_t>() : nullptr;
    const bool elementwise = L.alpha_size == n && n > 1;
    // one task per row of dW: the paths on its entry add into it in path order
    at::parallel_for(0, entries * L.rows, std::max<int64_t>(1, kGrain / L.inner), [&](int64_t r_begin, int64_t r_end) {
      std::vector<opmath_t> acc(L.inner);
      for (int64_t out_row = r_begin; out_row < r_end; ++out_row) {
        const int64_t s = out_row / L.rows;
        const int64_t r = out_row % L.rows;
        std::fill(acc.begin(), acc.end(), opmath_t(0));
        const int64_t p_first = entries == 1 ? 0 : s;
        const int64_t p_last = entries == 1 ? L.paths : s + 1;
        for (int64_t p = p_first; p < p_last; ++p) {
          if (!active[p]) continue;
          const int64_t local = r * L.inner;
          const scalar_t* gb = g + p * n + local;
          const bool* mb = m == nullptr ? nullptr : m + p * n + local;
          for (int64_t j = 0; j < L.inner; ++j) {
            acc[j] += (mb == nullptr || mb[j]) ? static_cast<opmath_t>(gb[j]) : opmath_t(0);
          }
          if (!alpha_grad || lams[p] == 0.0) continue;
          const double scale = lams[p] * sigma[L.entry_of(p)];
          double dot = 0.0;
          for_each_noise_block(seeds[p], local, local + L.inner, [&](int64_t start, int64_t block, const float* eta) {
            const int64_t off = start - local;
            for (int64_t j = 0; j < block; ++j) {
              const double kept = (mb == nullptr || mb[off + j]) ? static_cast<double>(gb[off + j]) : 0.0;
              if (elementwise) {
                ga[p * n + start + j] = static_cast<scalar_t>(scale * kept * eta[j]);
              } else {
                dot += kept * eta[j];
              }
            }
          });
          if (!elementwise) partial[p * L.rows + r] = scale * dot;
        }
        scalar_t* out = gw + out_row * L.inner;
        for (int64_t j = 0; j < L.inner; ++j) out[j] = static_cast<scalar_t>(acc[j]);
      }
    });
    if (alpha_grad && !elementwise) {
      for (int64_t p = 0; p < L.paths; ++p) {
        if (L.alpha_size == 1) {
          double total = 0.0;
          for (int64_t r = 0; r < L.rows; ++r) total += partial[p * L.rows + r];
          ga[p] = static_cast<scalar_t>(total);
        } else {
          for (int64_t r = 0; r < L.rows; ++r) ga[p * L.rows + r] = static_cast<scalar_t>(partial[p * L.rows + r]);
        }
      }
    }
  });
  return {grad_weight, grad_alpha};
}

// Stable counting sort: counts[p] samples on path p; perm lists the samples of
// path 0, then path 1, ..., each in batch order.
std::tuple<at::Tensor, at::Tensor> route_sort_cpu(const at::Tensor& route_in, int64_t num_paths) {
  check_defined("route_sort", "route", route_in);
  TORCH_CHECK_TYPE(route_in.scalar_type() == at::kInt || route_in.scalar_type() == at::kLong,
                   "route_sort: route must be an int32 or int64 tensor, got ", dtype_name(route_in.scalar_type()));
  check_device_type("route_sort", "route", route_in, at::kCPU);
  TORCH_CHECK_VALUE(route_in.dim() == 1, "route_sort: route must be 1-D [B], got shape ", route_in.sizes());
  TORCH_CHECK_VALUE(num_paths >= 1, "route_sort: num_paths must be at least 1, got ", num_paths);
  const at::Tensor route = route_in.contiguous();
  const int64_t batch = route.size(0);
  at::Tensor counts = cpu_empty({num_paths}, at::kLong);  // the dispatch of at::empty: most of a small sort
  at::Tensor perm = cpu_empty({batch}, at::kLong);
  int64_t* c = counts.mutable_data_ptr<int64_t>();
  std::fill(c, c + num_paths, int64_t{0});  // not at::zeros: its fill's dispatch costs more than this sort
  int64_t* out = perm.mutable_data_ptr<int64_t>();
  AT_DISPATCH_INDEX_TYPES(route.scalar_type(), "route_sort", [&] {
    const index_t* r = route.const_data_ptr<index_t>();
    for (int64_t b = 0; b < batch; ++b) {
      TORCH_CHECK_VALUE(r[b] >= 0 && r[b] < num_paths, "route_sort: route values must lie in [0, ", num_paths,
                        "), got ", static_cast<int64_t>(r[b]), " at sample ", b);
      ++c[r[b]];
    }
    c10::SmallVector<int64_t, 8> next(num_paths, 0);
    for (int64_t p = 1; p < num_paths; ++p) next[p] = next[p - 1] + c[p - 1];
    for (int64_t b = 0; b < batch; ++b) out[next[r[b]]++] = b;
  });
  return {counts, perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("path_weights_fwd_kernel", &path_weights_fwd_cpu);
  m.impl("path_weights_bwd_kernel", &path_weights_bwd_cpu);
  m.impl("route_sort_kernel", &route_sort_cpu);
}

}  // namespace robustkernels
