// The SIMD pieces of the CrossMax forward (csrc/cpu/crossmax.cpp), written with GCC / Clang
// vector extensions: one source that each instruction-set variant of multiversion.h lowers to its
// own registers; a block of classes is one vector of W lanes, W chosen per path by the caller.
// Every lane does what a scalar loop over the classes does, in the same order (strict
// comparisons, selects, the same subtractions and sums), so the paths agree bit for bit, NaN and
// signed zeros included.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "multiversion.h"

namespace robustkernels {
namespace crossmax_lanes {

template <typename T, int W>
using Vec [[gnu::vector_size(sizeof(T) * W)]] = T;

// A vector comparison yields integer lanes of the compared type's width; the indices carried
// alongside the values use that width, so the comparison masks select them directly.
template <typename acc_t>
using LaneIndex = std::conditional_t<sizeof(acc_t) == 8, int64_t, int32_t>;

// A vector with every lane equal to value (an added zero vector would turn -0 into +0).
template <typename Lanes, typename T>
RK_ALWAYS_INLINE inline Lanes splat(T value) {
  Lanes v;
  for (size_t l = 0; l < sizeof(Lanes) / sizeof(v[0]); ++l) v[l] = value;
  return v;
}

// Lanes [0, lanes) of a vector from p (the rest 0), converted to acc_t.
template <int W, typename acc_t, typename scalar_t>
RK_ALWAYS_INLINE inline Vec<acc_t, W> load(const scalar_t* p, int lanes = W) {
  acc_t lane[W] = {};
  for (int l = 0; l < lanes; ++l) lane[l] = static_cast<acc_t>(p[l]);
  Vec<acc_t, W> v;
  std::memcpy(&v, lane, sizeof v);
  return v;
}

// Lanes [0, lanes) of the vector v (W lanes) to p, converted to out_t.
template <int W, typename out_t, typename Lanes>
RK_ALWAYS_INLINE inline void store(out_t* p, const Lanes& v, int lanes = W) {
  for (int l = 0; l < lanes; ++l) p[l] = static_cast<out_t>(v[l]);
}

// The max of a row over classes and its argmax, the first class holding a value equal to it (the
// last class if none does, as for a NaN row[0]). The max comes from kMaxLanes interleaved lanes
// seeded with row[0], then the tail: that order decides which of +0 and -0 it returns, and is the
// order of the kernel's earlier scalar loop. Each lane also keeps the first class of its maximum.
constexpr int kMaxLanes = 8;

template <typename acc_t, typename scalar_t>
RK_ALWAYS_INLINE inline acc_t row_max(const scalar_t* row, int64_t C, int32_t* arg) {
  using Values = Vec<acc_t, kMaxLanes>;
  using Indices = Vec<LaneIndex<acc_t>, kMaxLanes>;
  const acc_t first = static_cast<acc_t>(row[0]);
  Values lane_max = splat<Values>(first);
  Indices lane_arg = Indices{};
  Indices lane_class = Indices{0, 1, 2, 3, 4, 5, 6, 7};
  int64_t c = 0;
  for (; c + kMaxLanes <= C; c += kMaxLanes) {
    const Values v = load<kMaxLanes, acc_t>(row + c);
    const auto gt = v > lane_max;
    lane_max = gt ? v : lane_max;
    lane_arg = gt ? lane_class : lane_arg;
    lane_class += kMaxLanes;
  }
  acc_t best = lane_max[0];
  for (int l = 1; l < kMaxLanes; ++l) best = lane_max[l] > best ? lane_max[l] : best;
  for (int64_t t = c; t < C; ++t) {
    const acc_t v = static_cast<acc_t>(row[t]);
    best = v > best ? v : best;
  }
  int64_t found = C;
  for (int l = 0; l < kMaxLanes; ++l) {
    if (lane_max[l] == best && lane_arg[l] < found) found = lane_arg[l];
  }
  for (int64_t t = c; t < C && found == C; ++t) {
    if (static_cast<acc_t>(row[t]) == best) found = t;
  }
  *arg = static_cast<int32_t>(found == C ? C - 1 : found);
  return best;
}

// The top D predictors of a block of W classes, best first, held in registers: Z values and their
// predictor indices. A row is inserted before the first entry it strictly beats, so a later
// predictor goes after earlier ones of equal value (ties: lower index first).
template <int D, int W, typename acc_t>
struct TopRanks {
  using Values = Vec<acc_t, W>;
  using Indices = Vec<LaneIndex<acc_t>, W>;
  Values value[D];
  Indices index[D];

  // Compares v with the first Compared entries; while the table is still filling (Compared < D),
  // entry Compared takes whatever is carried down.
  template <int Compared>
  RK_ALWAYS_INLINE void insert(Values v, Indices i) {
    Indices shifting = Indices{};
    for (int j = 0; j < Compared; ++j) {
      shifting |= v > value[j];
      const Values here = value[j];
      const Indices here_index = index[j];
      value[j] = shifting ? v : here;
      index[j] = shifting ? i : here_index;
      v = shifting ? here : v;
      i = shifting ? here_index : i;
    }
    if constexpr (Compared < D) {
      value[Compared] = v;
      index[Compared] = i;
    }
  }

  // The first D rows fill the table: row n is compared with the n entries before it.
  template <typename Rows, size_t... n>
  RK_ALWAYS_INLINE void fill(const Rows& rows, std::index_sequence<n...>) {
    (insert<static_cast<int>(n)>(rows.z(n), splat<Indices>(static_cast<LaneIndex<acc_t>>(n))), ...);
  }
};

// Rows of one sample over the classes [c, c + lanes) (lanes < W only for a last block narrower
// than a vector): Y = x - row_max per predictor, their max over predictors and Z = Y - that max.
template <int W, typename acc_t, typename scalar_t>
struct BlockRows {
  using Values = Vec<acc_t, W>;
  using Indices = Vec<LaneIndex<acc_t>, W>;
  const scalar_t* xb;
  int64_t s_n;
  const acc_t* row_shift;
  int64_t c;
  int lanes;
  Values col_max;

  RK_ALWAYS_INLINE Values y(int64_t n) const { return load<W, acc_t>(xb + n * s_n + c, lanes) - row_shift[n]; }
  RK_ALWAYS_INLINE Values z(int64_t n) const { return y(n) - col_max; }

  // The max over predictors and its argmax (the first predictor holding it) into col_max and arg.
  RK_ALWAYS_INLINE void max_over_predictors(int64_t N, int32_t* arg) {
    col_max = y(0);
    Indices col_arg = Indices{};
    for (int64_t n = 1; n < N; ++n) {
      const Values yn = y(n);
      const auto gt = yn > col_max;
      col_max = gt ? yn : col_max;
      col_arg = gt ? splat<Indices>(static_cast<LaneIndex<acc_t>>(n)) : col_arg;
    }
    store<W>(arg, col_arg, lanes);
  }
};

// The top D of Z over the N predictors for one block of classes; pred receives the argmax over
// predictors of the block's classes.
template <int D, int W, typename acc_t, typename scalar_t>
RK_ALWAYS_INLINE inline TopRanks<D, W, acc_t> rank_block(const scalar_t* xb, int64_t s_n, int64_t N,
                                                         const acc_t* row_shift, int64_t c, int lanes,
                                                         int32_t* pred) {
  using Table = TopRanks<D, W, acc_t>;
  BlockRows<W, acc_t, scalar_t> rows{xb, s_n, row_shift, c, lanes, {}};
  rows.max_over_predictors(N, pred + c);
  Table table;
  table.fill(rows, std::make_index_sequence<D>{});
  for (int64_t n = D; n < N; ++n) {
    table.template insert<D>(rows.z(n), splat<typename Table::Indices>(static_cast<LaneIndex<acc_t>>(n)));
  }
  return table;
}

}  // namespace crossmax_lanes
}  // namespace robustkernels
