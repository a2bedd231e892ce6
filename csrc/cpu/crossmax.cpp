// CPU kernels of CrossMax, the aggregation of the multi-resolution
// self-ensemble (Fort & Lakshminarayanan, "Ensemble everything everywhere"):
//   Y = X - max over classes      (per predictor n, sample b)
//   Z = Y - max over predictors   (per sample b, class c)
//   out[b, c] = k-th highest of Z[:, b, c] (or the mean of the top k, or the lower median).
// Per sample b (parallel over b): the max over classes of each row, then per block of classes
// (one SIMD vector, crossmax_lanes.h) the max over predictors and the top ranks of Z held in
// registers, predictor by predictor. It returns the int32 indices the backward needs: argmax over
// classes per (n, b), argmax over predictors per (b, c) and the selected predictors per (b, c).
// Ties go to the lowest index everywhere (the order is: higher value first, then lower index).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "../arg_checks.h"

// The vectors of crossmax_lanes.h, wider than the baseline's registers, are passed and returned
// only between functions always inlined into one variant: the ABI change GCC warns of is never
// crossed.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "crossmax_lanes.h"
#include "multiversion.h"


namespace robustkernels {
namespace {

using crossmax_lanes::store;

// Up to this many ranks are kept in registers (crossmax_lanes.h); deeper ranks use nth_element
// per class.
constexpr int kMaxTableDepth = 8;
constexpr int64_t kGrainElements = 16384;

enum class Reduction { kKth, kTopkMean, kMedian };

Reduction parse_reduction(c10::string_view name) {
  if (name == "kth") return Reduction::kKth;
  if (name == "topk_mean") return Reduction::kTopkMean;
  if (name == "median") return Reduction::kMedian;
  TORCH_CHECK_VALUE(false, "crossmax: reduction must be 'kth', 'topk_mean' or 'median', got '",
                    std::string(name), "'");
  return Reduction::kKth;
}

// rank: the deepest 0-based rank (in descending order) needed; count: how many
// selected predictors are stored per (b, c) (k for topk_mean, else 1).
struct Selection {
  int64_t rank;
  int64_t count;
};

Selection selection_of(Reduction reduction, int64_t k, int64_t n) {
  switch (reduction) {
    case Reduction::kTopkMean:
      return {k - 1, k};
    case Reduction::kMedian:  // lower median: ascending position (n - 1) / 2
      return {n - 1 - (n - 1) / 2, 1};
    default:
      return {k - 1, 1};
  }
}

// One block of W classes of sample b through the register table of depth D = the deepest rank + 1.
template <int D, int W, typename acc_t, typename scalar_t>
RK_ALWAYS_INLINE inline void select_block(const scalar_t* xb, int64_t s_n, int64_t N, int64_t B, int64_t C,
                                          int64_t b, const acc_t* row_shift, int64_t count, int64_t c, int lanes,
                                          scalar_t* out_b, int32_t* pred_b, int32_t* sel_idx) {
  using Table = crossmax_lanes::TopRanks<D, W, acc_t>;
  const Table table = crossmax_lanes::rank_block<D, W, acc_t>(xb, s_n, N, row_shift, c, lanes, pred_b);
  if (count == 1) {
    store<W>(out_b + c, table.value[D - 1], lanes);
    store<W>(sel_idx + b * C + c, table.index[D - 1], lanes);
    return;
  }
  typename Table::Values sum{};
  for (int j = 0; j < D; ++j) {
    sum += table.value[j];
    store<W>(sel_idx + (j * B + b) * C + c, table.index[j], lanes);
  }
  store<W>(out_b + c, sum / static_cast<acc_t>(D), lanes);
}

// Every class of sample b, W at a time.
template <int D, int W, typename acc_t, typename scalar_t>
RK_ALWAYS_INLINE inline void select_in_registers(const scalar_t* xb, int64_t s_n, int64_t N, int64_t B, int64_t C,
                                                 int64_t b, const acc_t* row_shift, int64_t count,
                                                 scalar_t* out_b, int32_t* pred_b, int32_t* sel_idx) {
  if (C < W) {
    select_block<D, W>(xb, s_n, N, B, C, b, row_shift, count, 0, static_cast<int>(C), out_b, pred_b, sel_idx);
    return;
  }
  for (int64_t c = 0; c + W <= C; c += W) {
    select_block<D, W>(xb, s_n, N, B, C, b, row_shift, count, c, W, out_b, pred_b, sel_idx);
  }
  // The remainder as the last W classes: the overlap is recomputed to the same results.
  if (C % W != 0) select_block<D, W>(xb, s_n, N, B, C, b, row_shift, count, C - W, W, out_b, pred_b, sel_idx);
}

// Ranks deeper than the register table: per class, the max over predictors, then nth_element on
// (higher value first, then lower index). z and order: N elements of scratch.
template <typename acc_t, typename scalar_t>
void select_by_sorting(const scalar_t* xb, int64_t s_n, int64_t N, int64_t B, int64_t C, int64_t b,
                       const acc_t* row_shift, Selection sel, scalar_t* out_b, int32_t* pred_b, int32_t* sel_idx,
                       acc_t* z, int32_t* order) {
  const auto before = [&](int32_t a, int32_t o) { return z[a] > z[o] || (z[a] == z[o] && a < o); };
  for (int64_t c = 0; c < C; ++c) {
    acc_t col_max = static_cast<acc_t>(xb[c]) - row_shift[0];
    int32_t col_arg = 0;
    for (int64_t n = 1; n < N; ++n) {
      const acc_t y = static_cast<acc_t>(xb[n * s_n + c]) - row_shift[n];
      if (y > col_max) {
        col_max = y;
        col_arg = static_cast<int32_t>(n);
      }
    }
    pred_b[c] = col_arg;
    for (int64_t n = 0; n < N; ++n) z[n] = (static_cast<acc_t>(xb[n * s_n + c]) - row_shift[n]) - col_max;
    std::iota(order, order + N, 0);
    std::nth_element(order, order + sel.rank, order + N, before);
    if (sel.count == 1) {
      out_b[c] = static_cast<scalar_t>(z[order[sel.rank]]);
      sel_idx[b * C + c] = order[sel.rank];
      continue;
    }
    std::sort(order, order + sel.rank, before);
    acc_t sum = 0;
    for (int64_t j = 0; j < sel.count; ++j) {
      sum += z[order[j]];
      sel_idx[(j * B + b) * C + c] = order[j];
    }
    out_b[c] = static_cast<scalar_t>(sum / static_cast<acc_t>(sel.count));
  }
}

// Samples [b_begin, b_end), in blocks of BlockBytes of classes. Rows are contiguous over classes
// (the caller makes them so); s_n and s_b are free. Always inlined, so that the float32 entry
// point below is compiled once per instruction set.
template <int BlockBytes, typename scalar_t>
RK_ALWAYS_INLINE inline void crossmax_forward_samples(const scalar_t* x, int64_t s_n, int64_t s_b, int64_t N,
                                                      int64_t B, int64_t C, Selection sel, scalar_t* out,
                                                      int32_t* class_idx, int32_t* pred_idx, int32_t* sel_idx,
                                                      int64_t b_begin, int64_t b_end) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int W = BlockBytes / sizeof(acc_t);
  const int64_t depth = sel.rank + 1;
  std::vector<acc_t> row_shift(N);
  std::vector<acc_t> z(depth > kMaxTableDepth ? N : 0);
  std::vector<int32_t> order(z.size());
  for (int64_t b = b_begin; b < b_end; ++b) {
    const scalar_t* xb = x + b * s_b;
    for (int64_t n = 0; n < N; ++n) {
      row_shift[n] = crossmax_lanes::row_max<acc_t>(xb + n * s_n, C, class_idx + n * B + b);
    }
    scalar_t* out_b = out + b * C;
    int32_t* pred_b = pred_idx + b * C;
    switch (depth) {
#define ROBUSTKERNELS_DEPTH_CASE(D)                                                                           \
  case D:                                                                                                     \
    select_in_registers<D, W>(xb, s_n, N, B, C, b, row_shift.data(), sel.count, out_b, pred_b, sel_idx); \
    break;
      ROBUSTKERNELS_DEPTH_CASE(1)
      ROBUSTKERNELS_DEPTH_CASE(2)
      ROBUSTKERNELS_DEPTH_CASE(3)
      ROBUSTKERNELS_DEPTH_CASE(4)
      ROBUSTKERNELS_DEPTH_CASE(5)
      ROBUSTKERNELS_DEPTH_CASE(6)
      ROBUSTKERNELS_DEPTH_CASE(7)
      ROBUSTKERNELS_DEPTH_CASE(8)
#undef ROBUSTKERNELS_DEPTH_CASE
      default:
        select_by_sorting(xb, s_n, N, B, C, b, row_shift.data(), sel, out_b, pred_b, sel_idx, z.data(),
                          order.data());
    }
  }
}

// float32, the common case, compiled for each instruction-set path (the extension's baseline is
// SSE2), each with the block it runs fastest: 16 bytes on SSE2 (a wider table spills its 16
// registers), 32 on AVX2 and AVX-512 (on 64-byte vectors GCC 12 stops with an internal error in
// the comparison masks of TopRanks::insert).
RK_PER_ISA_EACH(void, crossmax_forward_samples_f32,
                (const float* x, int64_t s_n, int64_t s_b, int64_t N, int64_t B, int64_t C, Selection sel,
                 float* out, int32_t* class_idx, int32_t* pred_idx, int32_t* sel_idx, int64_t b_begin,
                 int64_t b_end),
                (x, s_n, s_b, N, B, C, sel, out, class_idx, pred_idx, sel_idx, b_begin, b_end),
                (crossmax_forward_samples<16, float>), (crossmax_forward_samples<32, float>),
                (crossmax_forward_samples<32, float>))

// The other dtypes run on the baseline build: 16-byte blocks.
constexpr int kBaselineBlockBytes = 16;

template <typename scalar_t>
void crossmax_forward_impl(const scalar_t* x, int64_t s_n, int64_t s_b, int64_t N, int64_t B, int64_t C,
                           Selection sel, scalar_t* out, int32_t* class_idx, int32_t* pred_idx, int32_t* sel_idx) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (N * C));
  at::parallel_for(0, B, grain, [&](int64_t b_begin, int64_t b_end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      crossmax_forward_samples_f32(x, s_n, s_b, N, B, C, sel, out, class_idx, pred_idx, sel_idx, b_begin, b_end);
    } else {
      crossmax_forward_samples<kBaselineBlockBytes, scalar_t>(x, s_n, s_b, N, B, C, sel, out, class_idx, pred_idx,
                                                              sel_idx, b_begin, b_end);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crossmax_fwd_cpu(const at::Tensor& logits, int64_t k,
                                                                            c10::string_view reduction_name) {
  const char* op = "crossmax";
  check_kernel_float(op, "logits", logits);
  check_device_type(op, "logits", logits, at::kCPU);
  check_rank(op, "logits", logits, 3, "[N, B, C]");
  check_not_empty(op, "logits", logits);
  const Reduction reduction = parse_reduction(reduction_name);
  const int64_t N = logits.size(0), B = logits.size(1), C = logits.size(2);
  TORCH_CHECK_VALUE(N <= INT32_MAX && C <= INT32_MAX, "crossmax: logits has too many predictors or classes");
  if (reduction != Reduction::kMedian) {
    TORCH_CHECK_VALUE(k >= 1 && k <= N, "crossmax: k must be in [1, N] = [1, ", N, "], got ", k);
  }
  const Selection sel = selection_of(reduction, k, N);
  // The kernel walks classes with unit stride; other layouts (e.g. a moved predictor dim) need not copy.
  const at::Tensor x = logits.stride(2) == 1 ? logits : logits.contiguous();
  const auto index_options = logits.options().dtype(at::kInt);
  at::Tensor out = at::empty({B, C}, logits.options());
  at::Tensor class_idx = at::empty({N, B}, index_options);
  at::Tensor pred_idx = at::empty({B, C}, index_options);
  at::Tensor sel_idx = at::empty({sel.count, B, C}, index_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "crossmax_fwd", [&] {
    crossmax_forward_impl<scalar_t>(x.const_data_ptr<scalar_t>(), x.stride(0), x.stride(1), N, B, C, sel, out.mutable_data_ptr<scalar_t>(),
                                    class_idx.mutable_data_ptr<int32_t>(), pred_idx.mutable_data_ptr<int32_t>(),
                                    sel_idx.mutable_data_ptr<int32_t>());
  });
  return {out, class_idx, pred_idx, sel_idx};
}

// Each selected element z[n, b, c] = x[n, b, c] - x[n, b, a_n] - (x[m, b, c] - x[m, b, a_m])
// (a: argmax over classes, m: argmax over predictors) passes its share g of
// d out[b, c] as +g, -g, -g, +g to those four logits. The a_n terms are summed per
// row first and added once. Each thread owns whole samples b: no races, and the
// order of every sum is fixed.
// trusted_indices is ignored: the checks here read the indices on the host, which costs no sync.
at::Tensor crossmax_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& class_in, const at::Tensor& pred_in,
                            const at::Tensor& sel_in, bool /*trusted_indices*/) {
  const char* op = "crossmax_backward";
  check_kernel_float(op, "grad_out", grad_in);
  check_device_type(op, "grad_out", grad_in, at::kCPU);
  check_rank(op, "grad_out", grad_in, 2, "[B, C]");
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"class_idx", &class_in},
                                {"pred_idx", &pred_in},
                                {"sel_idx", &sel_in}}) {
    check_dtype(op, name, *t, at::kInt);
    check_same_device(op, name, *t, "grad_out", grad_in);
  }
  const int64_t B = grad_in.size(0), C = grad_in.size(1);
  TORCH_CHECK_VALUE(class_in.dim() == 2 && class_in.size(1) == B && class_in.size(0) >= 1,
                    "crossmax_backward: class_idx must have shape [N, B] with B = ", B, ", got ", class_in.sizes());
  const int64_t N = class_in.size(0);
  TORCH_CHECK_VALUE(pred_in.sizes() == grad_in.sizes(), "crossmax_backward: pred_idx must have grad_out's shape ",
                    grad_in.sizes(), ", got ", pred_in.sizes());
  TORCH_CHECK_VALUE(sel_in.dim() == 3 && sel_in.size(0) >= 1 && sel_in.size(0) <= N && sel_in.size(1) == B &&
                        sel_in.size(2) == C,
                    "crossmax_backward: sel_idx must have shape [S, B, C] with 1 <= S <= N = ", N, ", got ",
                    sel_in.sizes());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor class_idx = class_in.contiguous();
  const at::Tensor pred_idx = pred_in.contiguous();
  const at::Tensor sel_idx = sel_in.contiguous();
  const int64_t S = sel_idx.size(0);
  const auto acc_type = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor acc = at::empty({N, B, C}, grad.options().dtype(acc_type));
  // The indices address the [N, B, C] gradient: each is checked where it is read (no pass of its
  // own), and an index out of range is reported, naming its tensor, before anything is returned.
  std::atomic<bool> bad_class{false}, bad_pred{false}, bad_sel{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "crossmax_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const int32_t* a = class_idx.const_data_ptr<int32_t>();
    const int32_t* m = pred_idx.const_data_ptr<int32_t>();
    const int32_t* s = sel_idx.const_data_ptr<int32_t>();
    acc_t* d = acc.mutable_data_ptr<acc_t>();
    const acc_t share = acc_t(1) / static_cast<acc_t>(S);
    const int64_t grain = std::max<int64_t>(1, kGrainElements / (N * C));
    at::parallel_for(0, B, grain, [&](int64_t b_begin, int64_t b_end) {
      std::vector<acc_t> row_sum(N);
      for (int64_t b = b_begin; b < b_end; ++b) {
        // zeroed here rather than by at::zeros: one pass, by the thread that scatters into it
        for (int64_t n = 0; n < N; ++n) std::fill_n(d + (n * B + b) * C, C, acc_t(0));
        std::fill(row_sum.begin(), row_sum.end(), acc_t(0));
        for (int64_t c = 0; c < C; ++c) {
          const acc_t gc = static_cast<acc_t>(g[b * C + c]) * share;
          const int64_t mc = m[b * C + c];
          if (mc < 0 || mc >= N) {
            bad_pred = true;
            continue;
          }
          for (int64_t j = 0; j < S; ++j) {
            const int64_t n = s[(j * B + b) * C + c];
            if (n < 0 || n >= N) {
              bad_sel = true;
              continue;
            }
            if (n == mc) continue;  // the four terms cancel
            d[(n * B + b) * C + c] += gc;
            row_sum[n] -= gc;
            d[(mc * B + b) * C + c] -= gc;
            row_sum[mc] += gc;
          }
        }
        for (int64_t n = 0; n < N; ++n) {
          const int64_t an = a[n * B + b];
          if (an < 0 || an >= C) {
            bad_class = true;
            continue;
          }
          d[(n * B + b) * C + an] += row_sum[n];
        }
      }
    });
  });
  TORCH_CHECK_VALUE(!bad_class.load(), op, ": class_idx holds an index out of range [0, ", C, ")");
  TORCH_CHECK_VALUE(!bad_pred.load(), op, ": pred_idx holds an index out of range [0, ", N, ")");
  TORCH_CHECK_VALUE(!bad_sel.load(), op, ": sel_idx holds an index out of range [0, ", N, ")");
  return acc.scalar_type() == grad.scalar_type() ? acc : acc.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("crossmax_fwd_kernel", &crossmax_fwd_cpu);
  m.impl("crossmax_bwd_kernel", &crossmax_bwd_cpu);
}

}  // namespace robustkernels
