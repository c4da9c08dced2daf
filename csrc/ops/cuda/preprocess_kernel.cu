#include "../preprocess_plan.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cstdint>

namespace torchrl_reward {
namespace ops {

namespace {

constexpr int kThreads = 256;
// Each thread of the no-resize kernel converts 4 pixels: 12 bytes in (three
// 4-byte words), one 4-wide vector out per channel.
constexpr int kPixelsPerThread = 4;
constexpr int kTilePixels = kThreads * kPixelsPerThread;
constexpr int kTileWords = kTilePixels * 3 / 4;
// Images per launch: bounds gridDim.y and keeps the per-launch work the size
// the reward model feeds (256-image chunks).
constexpr int64_t kChunk = 256;

// Per-channel multiply-add, passed by value as a kernel argument.
struct Affine {
  float scale[3];
  float bias[3];
};

__device__ __forceinline__ void store1(float* dst, float v) {
  *dst = v;
}

__device__ __forceinline__ void store1(__half* dst, float v) {
  *dst = __float2half_rn(v);
}

// 4 consecutive outputs as one 16-byte (float) or 8-byte (half) store; `dst`
// must be aligned to that size.
__device__ __forceinline__ void store4(float* dst, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(dst) = make_float4(a, b, c, d);
}

__device__ __forceinline__ void store4(__half* dst, float a, float b, float c, float d) {
  const __half2 lo = __floats2half2_rn(a, b);
  const __half2 hi = __floats2half2_rn(c, d);
  uint2 packed;
  packed.x = *reinterpret_cast<const uint32_t*>(&lo);
  packed.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(dst) = packed;
}

__device__ __forceinline__ float byte_at(uint32_t word, int k) {
  return static_cast<float>((word >> (8 * k)) & 0xffu);
}

// No resize, H * W a multiple of 4, aligned pointers. Block (x, y) handles
// pixels [x * kTilePixels, ...) of image y: the block first copies its bytes
// into shared memory with coalesced 4-byte loads (thread t loads words t,
// t + 256, t + 512), then thread t converts pixels 4t..4t+3 (words 3t..3t+2,
// conflict-free) and writes each channel as one vector store, coalesced
// across the warp.
template <typename out_t>
__global__ void __launch_bounds__(kThreads) normalize_tiled_kernel(
    const uint8_t* __restrict__ images,
    out_t* __restrict__ out,
    int hw,
    Affine affine) {
  __shared__ uint32_t tile[kTileWords];
  const int64_t n = blockIdx.y;
  const int first = blockIdx.x * kTilePixels;
  const int pixels = min(kTilePixels, hw - first);
  const int words = pixels / 4 * 3;
  const uint32_t* src =
      reinterpret_cast<const uint32_t*>(images + n * hw * 3) + first / 4 * 3;
  for (int i = threadIdx.x; i < words; i += kThreads) {
    tile[i] = src[i];
  }
  __syncthreads();
  if (threadIdx.x * kPixelsPerThread >= pixels) {
    return;
  }
  // Little-endian bytes: r0 g0 b0 r1 | g1 b1 r2 g2 | b2 r3 g3 b3.
  const uint32_t w0 = tile[3 * threadIdx.x];
  const uint32_t w1 = tile[3 * threadIdx.x + 1];
  const uint32_t w2 = tile[3 * threadIdx.x + 2];
  const float v[3][4] = {
      {byte_at(w0, 0), byte_at(w0, 3), byte_at(w1, 2), byte_at(w2, 1)},
      {byte_at(w0, 1), byte_at(w1, 0), byte_at(w1, 3), byte_at(w2, 2)},
      {byte_at(w0, 2), byte_at(w1, 1), byte_at(w2, 0), byte_at(w2, 3)}};
  out_t* dst = out + n * 3 * hw + first + threadIdx.x * kPixelsPerThread;
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const float s = affine.scale[c];
    const float o = affine.bias[c];
    store4(
        dst + c * hw,
        fmaf(v[c][0], s, o),
        fmaf(v[c][1], s, o),
        fmaf(v[c][2], s, o),
        fmaf(v[c][3], s, o));
  }
}

// General path: bilinear resize (also exact identity when the sizes match)
// and normalisation in one pass. Thread q of image blockIdx.y produces 4
// consecutive outputs of one row; neighbouring threads read neighbouring
// source bytes (served by L1) and write contiguous output. `vector_store`
// needs out_w % 4 == 0 and an aligned output.
template <typename out_t>
__global__ void __launch_bounds__(kThreads) resize_normalize_kernel(
    const uint8_t* __restrict__ images,
    out_t* __restrict__ out,
    int in_h,
    int in_w,
    int out_h,
    int out_w,
    float scale_h,
    float scale_w,
    bool vector_store,
    Affine affine) {
  const int quads_per_row = (out_w + 3) / 4;
  const int q = blockIdx.x * kThreads + threadIdx.x;
  if (q >= quads_per_row * out_h) {
    return;
  }
  const int64_t n = blockIdx.y;
  const int y = q / quads_per_row;
  const int x_first = (q - y * quads_per_row) * 4;
  const auto ytap = detail::linear_tap(y, in_h, scale_h);
  const uint8_t* image = images + n * in_h * in_w * 3;
  const uint8_t* top = image + ytap.i0 * in_w * 3;
  const uint8_t* bottom = image + ytap.i1 * in_w * 3;
  const float wy1 = ytap.lambda;
  const float wy0 = 1.f - wy1;

  float v[3][4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int x = min(x_first + k, out_w - 1);
    const auto xtap = detail::linear_tap(x, in_w, scale_w);
    const int a = static_cast<int>(xtap.i0) * 3;
    const int b = static_cast<int>(xtap.i1) * 3;
    const float wx1 = xtap.lambda;
    const float wx0 = 1.f - wx1;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      const float t = static_cast<float>(top[a + c]) * wx0 + static_cast<float>(top[b + c]) * wx1;
      const float u =
          static_cast<float>(bottom[a + c]) * wx0 + static_cast<float>(bottom[b + c]) * wx1;
      v[c][k] = fmaf(t * wy0 + u * wy1, affine.scale[c], affine.bias[c]);
    }
  }

  const int plane = out_h * out_w;
  out_t* dst = out + n * 3 * plane + y * out_w + x_first;
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    if (vector_store) {
      store4(dst + c * plane, v[c][0], v[c][1], v[c][2], v[c][3]);
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (x_first + k < out_w) {
          store1(dst + c * plane + k, v[c][k]);
        }
      }
    }
  }
}

bool is_aligned(const void* ptr, size_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

template <typename out_t>
void launch(
    const uint8_t* in,
    out_t* out,
    const detail::PreprocessPlan& plan,
    const Affine& affine,
    cudaStream_t stream) {
  const int64_t in_image = plan.in_h * plan.in_w * 3;
  const int64_t out_image = 3 * plan.out_h * plan.out_w;
  const int hw = static_cast<int>(plan.in_h * plan.in_w);
  const bool tiled = !plan.resize && hw % 4 == 0 && is_aligned(in, 4) &&
      is_aligned(out, 4 * sizeof(out_t));
  const int quads = static_cast<int>((plan.out_w + 3) / 4 * plan.out_h);
  const bool vector_store = plan.out_w % 4 == 0 && is_aligned(out, 4 * sizeof(out_t));
  for (int64_t start = 0; start < plan.batch; start += kChunk) {
    const unsigned images = static_cast<unsigned>(std::min(kChunk, plan.batch - start));
    const uint8_t* chunk_in = in + start * in_image;
    out_t* chunk_out = out + start * out_image;
    if (tiled) {
      const dim3 grid((hw + kTilePixels - 1) / kTilePixels, images);
      normalize_tiled_kernel<out_t><<<grid, kThreads, 0, stream>>>(chunk_in, chunk_out, hw, affine);
    } else {
      const dim3 grid((quads + kThreads - 1) / kThreads, images);
      resize_normalize_kernel<out_t><<<grid, kThreads, 0, stream>>>(
          chunk_in,
          chunk_out,
          static_cast<int>(plan.in_h),
          static_cast<int>(plan.in_w),
          static_cast<int>(plan.out_h),
          static_cast<int>(plan.out_w),
          static_cast<float>(plan.in_h) / static_cast<float>(plan.out_h),
          static_cast<float>(plan.in_w) / static_cast<float>(plan.out_w),
          vector_store,
          affine);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor preprocess_cuda(
    const at::Tensor& images,
    at::ArrayRef<double> mean,
    at::ArrayRef<double> std,
    at::OptionalIntArrayRef size,
    at::ScalarType dtype) {
  TORCH_CHECK_VALUE(
      images.is_cuda(),
      "preprocess (CUDA kernel): images must be a CUDA tensor, got device ",
      images.device().str(),
      "; move them with images.cuda() or call the op on the CPU tensor");
  const auto plan = detail::make_plan(images, mean, std, size, dtype);
  TORCH_CHECK_VALUE(
      plan.in_h * plan.in_w * 3 <= INT_MAX && plan.out_h * plan.out_w * 3 <= INT_MAX,
      "preprocess (CUDA kernel): images of shape ",
      detail::list_str(images.sizes()),
      " resized to ",
      detail::number_str(plan.out_h),
      "x",
      detail::number_str(plan.out_w),
      " exceed 2^31 values per image");
  const c10::cuda::CUDAGuard device_guard(images.device());
  at::Tensor out =
      at::empty({plan.batch, 3, plan.out_h, plan.out_w}, images.options().dtype(dtype));
  Affine affine{};
  for (int c = 0; c < 3; ++c) {
    affine.scale[c] = plan.scale[c];
    affine.bias[c] = plan.bias[c];
  }
  // The caller's stream (e.g. under `with torch.cuda.stream(s)`), no sync.
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const uint8_t* in = images.const_data_ptr<uint8_t>();
  if (dtype == at::kFloat) {
    launch(in, out.mutable_data_ptr<float>(), plan, affine, stream);
  } else {
    launch(in, static_cast<__half*>(out.mutable_data_ptr()), plan, affine, stream);
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(torchrl_reward, CUDA, m) {
  m.impl(TORCH_SELECTIVE_NAME("torchrl_reward::preprocess"), TORCH_FN(preprocess_cuda));
}

} // namespace ops
} // namespace torchrl_reward
