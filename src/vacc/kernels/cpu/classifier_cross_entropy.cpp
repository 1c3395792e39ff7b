#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
namespace vacc::cpu {
double classifier_cross_entropy(const void*, const void*, DType, const int32_t*, int64_t, int64_t, int64_t, float, float*, float*) { fail("classifier_cross_entropy: not yet written"); }
}
