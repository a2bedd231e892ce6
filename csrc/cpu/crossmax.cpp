// CPU kernels of CrossMax, the aggregation of the multi-resolution
// self-ensemble (Fort & Lakshminarayanan, "Ensemble everything everywhere"):
//   Y = X - max over classes      (per predictor n, sample b)
//   Z = Y - max over predictors   (per sample b, class c)
//   out[b, c] = k-th highest of Z[:, b, c] (or the mean of the top k, or the lower median).
// One pass per sample b (parallel over b) computes everything and returns the
// int32 indices the backward needs: argmax over classes per (n, b), argmax over
// predictors per (b, c) and the selected predictors per (b, c). Ties go to the
// lowest index everywhere (the order is: higher value first, then lower index).
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
#include "multiversion.h"


namespace robustkernels {
namespace {

// Up to this many ranks are kept by insertion, row by row; deeper ranks use
// nth_element per class.
constexpr int64_t kInsertionDepth = 8;
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

constexpr int kLanes = 8;  // independent maxima, so the row max vectorises

// Inserts row n into the sorted top D of every class: a later predictor goes
// after earlier ones of equal value. Branch-free over the classes (so the loop
// vectorises). Grow: the last of the D slots is still empty and takes whatever is
// carried down to it (the first D rows fill the table this way).
template <int D, bool Grow, typename acc_t, typename scalar_t>
RK_ALWAYS_INLINE inline void insert_row(const scalar_t* row, acc_t shift, const acc_t* col_max, int32_t n, int64_t C,
                                        acc_t* top_v, int32_t* top_i) {
  constexpr int compared = Grow ? D - 1 : D;
  for (int64_t c = 0; c < C; ++c) {
    // Find the first rank v strictly beats (an equal value stays below, so earlier
    // predictors come first among equals), then shift the ranks below it down.
    acc_t v = (static_cast<acc_t>(row[c]) - shift) - col_max[c];
    int32_t index = n;
    bool shifting = false;
    for (int j = 0; j < compared; ++j) {
      const acc_t here = top_v[j * C + c];
      const int32_t here_index = top_i[j * C + c];
      shifting = shifting || v > here;
      top_v[j * C + c] = shifting ? v : here;
      top_i[j * C + c] = shifting ? index : here_index;
      v = shifting ? here : v;
      index = shifting ? here_index : index;
    }
    if (Grow) {
      top_v[(D - 1) * C + c] = v;
      top_i[(D - 1) * C + c] = index;
    }
  }
}

// Inserts a row into a table of `depth` ranks (grow: its last rank still empty).
template <bool Grow, typename acc_t, typename scalar_t>
RK_ALWAYS_INLINE inline void insert_row_at_depth(int64_t depth, const scalar_t* row, acc_t shift,
                                                 const acc_t* col_max, int32_t n, int64_t C, acc_t* top_v,
                                                 int32_t* top_i) {
  switch (depth) {
#define ROBUSTKERNELS_INSERT_CASE(D) \
  case D:                            \
    return insert_row<D, Grow>(row, shift, col_max, n, C, top_v, top_i);
    ROBUSTKERNELS_INSERT_CASE(1)
    ROBUSTKERNELS_INSERT_CASE(2)
    ROBUSTKERNELS_INSERT_CASE(3)
    ROBUSTKERNELS_INSERT_CASE(4)
    ROBUSTKERNELS_INSERT_CASE(5)
    ROBUSTKERNELS_INSERT_CASE(6)
    ROBUSTKERNELS_INSERT_CASE(7)
    ROBUSTKERNELS_INSERT_CASE(8)
#undef ROBUSTKERNELS_INSERT_CASE
    default:
      TORCH_CHECK(false, "crossmax: insertion depth ", depth, " out of range");
  }
}

// Samples [b_begin, b_end). Rows are contiguous over classes (the caller makes
// them so); s_n and s_b are free. Always inlined, so that the float32 entry point
// below is compiled once per instruction set.
template <typename scalar_t>
RK_ALWAYS_INLINE inline void crossmax_forward_samples(const scalar_t* x, int64_t s_n, int64_t s_b, int64_t N,
                                                      int64_t B, int64_t C, Selection sel, scalar_t* out,
                                                      int32_t* class_idx, int32_t* pred_idx, int32_t* sel_idx,
                                                      int64_t b_begin, int64_t b_end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t depth = sel.rank + 1;
  const bool insertion = depth <= kInsertionDepth;
  std::vector<acc_t> row_max(N), col_max(C);
  std::vector<int32_t> col_arg(C);
  std::vector<acc_t> top_v(insertion ? depth * C : 0);
  std::vector<int32_t> top_i(insertion ? depth * C : 0);
  std::vector<acc_t> z(insertion ? 0 : N);
  std::vector<int32_t> order(insertion ? 0 : N);
  for (int64_t b = b_begin; b < b_end; ++b) {
    const scalar_t* xb = x + b * s_b;
    // max and argmax (first index of the max) over classes per predictor
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* row = xb + n * s_n;
      acc_t lane[kLanes];
      for (int l = 0; l < kLanes; ++l) lane[l] = static_cast<acc_t>(row[0]);
      int64_t c = 0;
      for (; c + kLanes <= C; c += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const acc_t v = static_cast<acc_t>(row[c + l]);
          lane[l] = v > lane[l] ? v : lane[l];
        }
      }
      acc_t best = lane[0];
      for (int l = 1; l < kLanes; ++l) best = lane[l] > best ? lane[l] : best;
      for (; c < C; ++c) {
        const acc_t v = static_cast<acc_t>(row[c]);
        best = v > best ? v : best;
      }
      int64_t arg = 0;
      while (arg < C - 1 && !(static_cast<acc_t>(row[arg]) == best)) ++arg;
      row_max[n] = best;
      class_idx[n * B + b] = static_cast<int32_t>(arg);
    }
    // max and argmax over predictors of Y per class (branch-free over classes)
    for (int64_t c = 0; c < C; ++c) {
      col_max[c] = static_cast<acc_t>(xb[c]) - row_max[0];
      col_arg[c] = 0;
    }
    for (int64_t n = 1; n < N; ++n) {
      const scalar_t* row = xb + n * s_n;
      const acc_t shift = row_max[n];
      const int32_t n32 = static_cast<int32_t>(n);
      for (int64_t c = 0; c < C; ++c) {
        const acc_t y = static_cast<acc_t>(row[c]) - shift;
        const bool gt = y > col_max[c];
        col_max[c] = gt ? y : col_max[c];
        col_arg[c] = gt ? n32 : col_arg[c];
      }
    }
    int32_t* pred_b = pred_idx + b * C;
    std::copy(col_arg.begin(), col_arg.end(), pred_b);
    scalar_t* out_b = out + b * C;
    if (insertion) {
      // Keep the top `depth` of each class, in order, predictor by predictor:
      // a later predictor goes after earlier ones of equal value.
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t* row = xb + n * s_n;
        const acc_t shift = row_max[n];
        const int32_t n32 = static_cast<int32_t>(n);
        if (n >= depth) {
          insert_row_at_depth<false>(depth, row, shift, col_max.data(), n32, C, top_v.data(), top_i.data());
        } else {
          insert_row_at_depth<true>(n + 1, row, shift, col_max.data(), n32, C, top_v.data(), top_i.data());
        }
      }
      if (sel.count == 1) {
        for (int64_t c = 0; c < C; ++c) {
          out_b[c] = static_cast<scalar_t>(top_v[sel.rank * C + c]);
          sel_idx[b * C + c] = top_i[sel.rank * C + c];
        }
      } else {
        for (int64_t c = 0; c < C; ++c) {
          acc_t sum = 0;
          for (int64_t j = 0; j < sel.count; ++j) {
            sum += top_v[j * C + c];
            sel_idx[(j * B + b) * C + c] = top_i[j * C + c];
          }
          out_b[c] = static_cast<scalar_t>(sum / static_cast<acc_t>(sel.count));
        }
      }
    } else {
      const auto before = [&](int32_t a, int32_t o) { return z[a] > z[o] || (z[a] == z[o] && a < o); };
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t n = 0; n < N; ++n) {
          z[n] = (static_cast<acc_t>(xb[n * s_n + c]) - row_max[n]) - col_max[c];
        }
        std::iota(order.begin(), order.end(), 0);
        std::nth_element(order.begin(), order.begin() + sel.rank, order.end(), before);
        if (sel.count == 1) {
          out_b[c] = static_cast<scalar_t>(z[order[sel.rank]]);
          sel_idx[b * C + c] = order[sel.rank];
        } else {
          std::sort(order.begin(), order.begin() + sel.rank, before);
          acc_t sum = 0;
          for (int64_t j = 0; j < sel.count; ++j) {
            sum += z[order[j]];
            sel_idx[(j * B + b) * C + c] = order[j];
          }
          out_b[c] = static_cast<scalar_t>(sum / static_cast<acc_t>(sel.count));
        }
      }
    }
  }
}

// float32, the common case, compiled for each instruction-set path (the
// extension's baseline is SSE2).
RK_PER_ISA(void, crossmax_forward_samples_f32,
           (const float* x, int64_t s_n, int64_t s_b, int64_t N, int64_t B, int64_t C, Selection sel, float* out,
            int32_t* class_idx, int32_t* pred_idx, int32_t* sel_idx, int64_t b_begin, int64_t b_end),
           (x, s_n, s_b, N, B, C, sel, out, class_idx, pred_idx, sel_idx, b_begin, b_end),
           crossmax_forward_samples<float>)

template <typename scalar_t>
void crossmax_forward_impl(const scalar_t* x, int64_t s_n, int64_t s_b, int64_t N, int64_t B, int64_t C,
                           Selection sel, scalar_t* out, int32_t* class_idx, int32_t* pred_idx, int32_t* sel_idx) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (N * C));
  at::parallel_for(0, B, grain, [&](int64_t b_begin, int64_t b_end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      crossmax_forward_samples_f32(x, s_n, s_b, N, B, C, sel, out, class_idx, pred_idx, sel_idx, b_begin, b_end);
    } else {
      crossmax_forward_samples<scalar_t>(x, s_n, s_b, N, B, C, sel, out, class_idx, pred_idx, sel_idx, b_begin,
                                         b_end);
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
at::Tensor crossmax_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& class_in, const at::Tensor& pred_in,
                            const at::Tensor& sel_in) {
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
  at::Tensor acc = at::zeros({N, B, C}, grad.options().dtype(acc_type));
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
