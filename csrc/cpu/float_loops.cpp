#include "float_loops.h"

namespace robustkernels {

RK_PER_ISA(void, shifted_sums_f32, (const float* x, int64_t n, double shift, double* sum, double* sum_sq),
           (x, n, shift, sum, sum_sq), shifted_sums_body<float>)
RK_PER_ISA(double, masked_copy_dot_f32, (const float* g, const bool* mask, const float* eta, float* gw, int64_t n),
           (g, mask, eta, gw, n), masked_copy_dot_body<float>)

}  // namespace robustkernels
