// std(W) of the noisy weight transform on CUDA: the unbiased standard deviation of
// the whole weight, reduced on the device into a device scalar (no host sync);
// declared in noisy_weight_kernels.cuh, the same as csrc/cpu/noisy_weight.cpp.
//
// Only CUDA headers here (no torch / ATen), so that `nvcc -c` builds this file on
// its own; the file also compiles under torch's default nvcc flags
// (__CUDA_NO_HALF_CONVERSIONS__ etc.): every half / bfloat16 conversion is explicit.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "block_reduce.cuh"
#include "noisy_weight_device.cuh"
#include "noisy_weight_kernels.cuh"

namespace robustkernels {
namespace cuda {
namespace {

// std partials: at most kStdMaxPartials blocks of at least kStdMinChunk elements.
constexpr int64_t kStdMaxPartials = 1024;
constexpr int64_t kStdMinChunk = 4096;

// Per-block (mean, M2) of contiguous chunks (Welford within a thread, Chan across
// threads), then one block combines the partials in a fixed order.
struct StdLayout {
  int64_t chunk;
  int64_t partials;
};

StdLayout std_layout(int64_t n) {
  StdLayout layout{kStdMinChunk, 0};
  if (n <= 0) return layout;
  layout.chunk = std::max(kStdMinChunk, (n + kStdMaxPartials - 1) / kStdMaxPartials);
  layout.partials = (n + layout.chunk - 1) / layout.chunk;
  return layout;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    std_partials_kernel(const T* __restrict__ weight, int64_t n, int64_t chunk, acc_t<T>* __restrict__ means,
                        acc_t<T>* __restrict__ m2s) {
  using Acc = acc_t<T>;
  __shared__ Moments<Acc> shared[kWarp];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = min64(begin + chunk, n);
  Moments<Acc> m{0, Acc(0), Acc(0)};
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const Acc x = to_acc(weight[i]);
    m.count += 1;
    const Acc delta = x - m.mean;
    m.mean += delta / static_cast<Acc>(m.count);
    m.m2 += delta * (x - m.mean);
  }
  m = block_reduce(m, Moments<Acc>{0, Acc(0), Acc(0)}, shared);
  if (threadIdx.x == 0) {
    means[blockIdx.x] = m.mean;
    m2s[blockIdx.x] = m.m2;
  }
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    std_finalize_kernel(const Acc* __restrict__ means, const Acc* __restrict__ m2s, int64_t partials,
                        int64_t n, int64_t chunk, Acc* __restrict__ sigma) {
  __shared__ Moments<Acc> shared[kWarp];
  Moments<Acc> m{0, Acc(0), Acc(0)};
  for (int64_t p = threadIdx.x; p < partials; p += blockDim.x) {
    const Moments<Acc> part{static_cast<long long>(min64(chunk, n - p * chunk)), means[p], m2s[p]};
    m = combine(m, part);
  }
  m = block_reduce(m, Moments<Acc>{0, Acc(0), Acc(0)}, shared);
  if (threadIdx.x == 0) {
    sigma[0] = n < 2 ? Acc(0) : acc_sqrt(m.m2 / static_cast<Acc>(n - 1));
  }
}

}  // namespace

int64_t noisy_weight_fwd_workspace_elems(int64_t n) { return 2 * std_layout(n).partials; }

template <typename T>
cudaError_t launch_weight_std(const T* weight, int64_t n, acc_t<T>* workspace, acc_t<T>* sigma,
                              cudaStream_t stream) {
  const StdLayout layout = std_layout(n);
  acc_t<T>* means = workspace;
  acc_t<T>* m2s = workspace + layout.partials;
  if (layout.partials > 0) {
    std_partials_kernel<T><<<static_cast<unsigned int>(layout.partials), kThreads, 0, stream>>>(
        weight, n, layout.chunk, means, m2s);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  std_finalize_kernel<acc_t<T>><<<1, kThreads, 0, stream>>>(means, m2s, layout.partials, n, layout.chunk, sigma);
  return cudaGetLastError();
}

#define RK_INSTANTIATE_WEIGHT_STD(T) \
  template cudaError_t launch_weight_std<T>(const T*, int64_t, acc_t<T>*, acc_t<T>*, cudaStream_t);
RK_INSTANTIATE_WEIGHT_STD(float)
RK_INSTANTIATE_WEIGHT_STD(double)
RK_INSTANTIATE_WEIGHT_STD(__half)
RK_INSTANTIATE_WEIGHT_STD(__nv_bfloat16)
#undef RK_INSTANTIATE_WEIGHT_STD

}  // namespace cuda
}  // namespace robustkernels
