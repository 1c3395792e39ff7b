// Element-wise kernels and reductions over flat arrays. Grid-stride loops with 64-bit indices.
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t first_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

template <typename S, typename D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) store(dst, i, load(src, i));
}

// n4 groups of four elements (16-byte f32 / 8-byte bf16 accesses: fewer, wider memory requests).
template <typename S, typename D>
__global__ void convert4_kernel(const S* src, D* dst, int64_t n4) {
  for (int64_t i = first_index(); i < n4; i += grid_stride()) store4(dst, i, load4(src, i));
}

// Four elements a store where dst is aligned to four (the step's gradient fill is its largest:
// 2 GB of the 0.5B model a step), the n % 4 last ones by the first threads.
template <typename T, bool Four>
__global__ void fill_kernel(T* dst, float value, int64_t n) {
  if constexpr (Four) {
    const int64_t n4 = n / 4;
    for (int64_t i = first_index(); i < n4; i += grid_stride())
      store4(dst, i, Vec4{value, value, value, value});
    if (first_index() < n - 4 * n4) store(dst, 4 * n4 + first_index(), value);
  } else {
    for (int64_t i = first_index(); i < n; i += grid_stride()) store(dst, i, value);
  }
}

__global__ void fill_i32_kernel(int32_t* dst, int32_t value, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) dst[i] = value;
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) out[i] = a[i] + b[i];
}

__global__ void add4_kernel(const float* a, const float* b, float* out, int64_t n4) {
  for (int64_t i = first_index(); i < n4; i += grid_stride()) {
    const Vec4 x = load4(a, i), y = load4(b, i);
    store4(out, i, Vec4{x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w});
  }
}

__global__ void scale_kernel(float* x, float s, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] *= s;
}

// Pass 1: block b sums squares of its grid-stride share into partials[b] (double).
__global__ void sum_of_squares_kernel(const float* x, int64_t n, double* partials) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = first_index(); i < n; i += grid_stride()) s += double(x[i]) * double(x[i]);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Pass 2 (one block): acc[0] += float(sum of the partials).
__global__ void sum_partials_kernel(const double* partials, int count, float* acc) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) acc[0] += float(s);
}

// Column sums out[col] += sum_i a[i, col] (* b[i, col]) (* row_scale[i]) in two launches:
//   1. a (32 columns x 32 row lanes) block per 32 columns and chunk of rows writes its chunk's
//      sums to partials (chunks, N); thread (x, y) sums rows y, y + 32, ... of the chunk;
//   2. one thread per column adds its chunks' partials in order.
// One block per 32 columns alone (896 columns: 28 blocks) left most of a GPU idle; the chunks
// give every SM work, and the fixed order keeps the result the same from run to run.
__global__ void column_partials_kernel(const float* a, const float* b, const float* row_scale,
                                       int64_t M, int64_t N, int64_t rows_per_chunk,
                                       float* partials) {
  __shared__ float part[32][33];
  const int64_t col = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t begin = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < M ? begin + rows_per_chunk : M;
  float s = 0.0f;
  if (col < N)
    for (int64_t i = begin + threadIdx.y; i < end; i += 32) {
      float t = a[i * N + col];
      if (b) t *= b[i * N + col];
      if (row_scale) t *= row_scale[i];
      s += t;
    }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    float total = 0.0f;
    for (int y = 0; y < 32; ++y) total += part[y][threadIdx.x];
    partials[int64_t(blockIdx.y) * N + col] = total;
  }
}

__global__ void add_column_partials_kernel(const float* partials, int64_t chunks, int64_t N,
                                           float* out) {
  const int64_t col = first_index();
  if (col >= N) return;
  float s = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) s += partials[c * N + col];
  out[col] += s;
}

template <typename T>
__global__ void add_bias_rows_kernel(T* out, const float* bias, int64_t M, int64_t N) {
  for (int64_t i = first_index(); i < M * N; i += grid_stride())
    store(out, i, load(out, i) + bias[i % N]);
}

template <typename T>
__global__ void scale_add_bias_kernel(T* out, float beta, const float* bias, int64_t M,
                                      int64_t N) {
  for (int64_t i = first_index(); i < M * N; i += grid_stride()) {
    float prev = beta != 0.0f ? beta * load(out, i) : 0.0f;
    store(out, i, prev + (bias ? bias[i % N] : 0.0f));
  }
}

template <typename Fn>
void dispatch(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32: fn(static_cast<float*>(nullptr)); return;
    case DType::BF16: fn(static_cast<bf16*>(nullptr)); return;
    default: fail("expected an f32 or bf16 tensor, got ", dtype_name(dtype));
  }
}

}  // namespace

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n,
             cudaStream_t stream) {
  if (n == 0) return;
  dispatch(src_dtype, [&](auto s_tag) {
    using S = std::remove_pointer_t<decltype(s_tag)>;
    dispatch(dst_dtype, [&](auto d_tag) {
      using D = std::remove_pointer_t<decltype(d_tag)>;
      if (n % 4 == 0 && vec4_aligned(src, sizeof(S)) && vec4_aligned(dst, sizeof(D)))
        convert4_kernel<<<grid_for(n / 4, kThreads), kThreads, 0, stream>>>(
            static_cast<const S*>(src), static_cast<D*>(dst), n / 4);
      else
        convert_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(
            static_cast<const S*>(src), static_cast<D*>(dst), n);
    });
  });
  VACC_CUDA_CHECK_LAUNCH("convert_kernel");
}

void fill(void* dst, DType dtype, float value, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (dtype == DType::I32) {
    fill_i32_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<int32_t*>(dst),
                                                                    int32_t(value), n);
  } else {
    dispatch(dtype, [&](auto tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const bool four = vec4_aligned(dst, sizeof(T));
      auto kernel = four ? fill_kernel<T, true> : fill_kernel<T, false>;
      kernel<<<grid_for(four ? (n + 3) / 4 : n, kThreads), kThreads, 0, stream>>>(
          static_cast<T*>(dst), value, n);
    });
  }
  VACC_CUDA_CHECK_LAUNCH("fill_kernel");
}

void add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 4 == 0 && vec4_aligned(a, 4) && vec4_aligned(b, 4) && vec4_aligned(out, 4))
    add4_kernel<<<grid_for(n / 4, kThreads), kThreads, 0, stream>>>(a, b, out, n / 4);
  else
    add_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(a, b, out, n);
  VACC_CUDA_CHECK_LAUNCH("add_kernel");
}

void scale(float* x, float s, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, s, n);
  VACC_CUDA_CHECK_LAUNCH("scale_kernel");
}

void sum_of_squares(const float* x, int64_t n, float* acc, double* partials, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = grid_for(n, kThreads, kSumPartials);
  sum_of_squares_kernel<<<blocks, kThreads, 0, stream>>>(x, n, partials);
  VACC_CUDA_CHECK_LAUNCH("sum_of_squares_kernel");
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(partials, int(blocks), acc);
  VACC_CUDA_CHECK_LAUNCH("sum_partials_kernel");
}

int64_t column_sum_chunks(int64_t rows) {
  const int64_t c = (rows + 511) / 512;  // about 512 rows per chunk, at most 32 chunks
  return c < 1 ? 1 : (c > 32 ? 32 : c);
}

void column_sums(const float* a, const float* b, const float* row_scale, int64_t M, int64_t N,
                 float* partials, float* out, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  const int64_t chunks = column_sum_chunks(M);
  const int64_t rows_per_chunk = (M + chunks - 1) / chunks;
  column_partials_kernel<<<dim3(unsigned((N + 31) / 32), unsigned(chunks)), dim3(32, 32), 0,
                           stream>>>(a, b, row_scale, M, N, rows_per_chunk, partials);
  VACC_CUDA_CHECK_LAUNCH("column_partials_kernel");
  add_column_partials_kernel<<<grid_for(N, kThreads), kThreads, 0, stream>>>(partials, chunks, N,
                                                                             out);
  VACC_CUDA_CHECK_LAUNCH("add_column_partials_kernel");
}

int64_t block_partials_floats(int64_t blocks, int64_t N) {
  return (blocks + column_sum_chunks(blocks)) * N;
}

void add_block_partials(float* scratch, int64_t blocks, int64_t N, float* out,
                        cudaStream_t stream) {
  column_sums(scratch, nullptr, nullptr, blocks, N, scratch + blocks * N, out, stream);
}

void add_bias_rows(void* out, DType out_dtype, const float* bias, int64_t M, int64_t N,
                   cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  dispatch(out_dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    add_bias_rows_kernel<<<grid_for(M * N, kThreads), kThreads, 0, stream>>>(static_cast<T*>(out),
                                                                            bias, M, N);
  });
  VACC_CUDA_CHECK_LAUNCH("add_bias_rows_kernel");
}

void scale_add_bias(void* out, DType out_dtype, float beta, const float* bias, int64_t M,
                    int64_t N, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  dispatch(out_dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    scale_add_bias_kernel<<<grid_for(M * N, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(out), beta, bias, M, N);
  });
  VACC_CUDA_CHECK_LAUNCH("scale_add_bias_kernel");
}

}  // namespace vacc::cuda
