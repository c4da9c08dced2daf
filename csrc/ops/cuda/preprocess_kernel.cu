#include "../preprocess_plan.h"

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

// The no-resize kernel works on units of P pixels, P = 16 / sizeof(out_t), so
// that each channel of a unit is one 16-byte store: 4 pixels for float, 8 for
// half. A unit's 3P input bytes are 3P/4 words, loaded as 3 vectors.
template <typename out_t>
struct Unit {
  static constexpr int kPixels = 16 / sizeof(out_t);
  static constexpr int kWords = kPixels * 3 / 4;
};

__device__ __forceinline__ void load_words(const uint8_t* src, uint32_t (&w)[3]) {
  const uint32_t* words = reinterpret_cast<const uint32_t*>(src);
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    w[k] = __ldg(words + k);
  }
}

__device__ __forceinline__ void load_words(const uint8_t* src, uint32_t (&w)[6]) {
  const uint2* pairs = reinterpret_cast<const uint2*>(src);
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const uint2 pair = __ldg(pairs + k);
    w[2 * k] = pair.x;
    w[2 * k + 1] = pair.y;
  }
}

// Byte `i` of little-endian words: pixel p, channel c is byte 3p + c.
template <int kWords>
__device__ __forceinline__ float byte_at(const uint32_t (&w)[kWords], int i) {
  return static_cast<float>((w[i / 4] >> (8 * (i % 4))) & 0xffu);
}

__device__ __forceinline__ void store_unit(float* dst, const float (&v)[4]) {
  store4(dst, v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ void store_unit(__half* dst, const float (&v)[8]) {
  __half2 h[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
  }
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(h);
}

// No resize, H * W a multiple of P, input P-byte and output 16-byte
// aligned. Thread t of block (x, y) converts kGroups units of image y, units
// t, t + 256, ... from x * 256 * kGroups: all loads are issued before the
// first store, so each thread keeps 48 bytes in flight (a memory-bound kernel
// is limited by bytes in flight), and each store instruction of a warp
// writes 512 contiguous bytes of one channel plane. The loads of a warp are
// strided by 3P bytes; its three load instructions read one contiguous span,
// so L1 serves what the first one fetched.
template <typename out_t>
__global__ void __launch_bounds__(kThreads) normalize_kernel(
    const uint8_t* __restrict__ images,
    out_t* __restrict__ out,
    int hw,
    Affine affine) {
  constexpr int P = Unit<out_t>::kPixels;
  constexpr int kGroups = 16 / P;
  const int units = hw / P;
  const int64_t n = blockIdx.y;
  const uint8_t* image = images + n * hw * 3;
  out_t* planes = out + n * 3 * hw;
  const int first = blockIdx.x * kThreads * kGroups + threadIdx.x;

  uint32_t w[kGroups][Unit<out_t>::kWords];
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int u = first + g * kThreads;
    if (u < units) {
      load_words(image + u * 3 * P, w[g]);
    }
  }
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int u = first + g * kThreads;
    if (u >= units) {
      break;
    }
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      float v[P];
#pragma unroll
      for (int p = 0; p < P; ++p) {
        v[p] = fmaf(byte_at(w[g], 3 * p + c), affine.scale[c], affine.bias[c]);
      }
      store_unit(planes + c * hw + u * P, v);
    }
  }
}

// No resize, channels-last output: the output keeps the input's interleaved
// order, so the batch is one flat array of values. A unit is P values (P
// input bytes, one 16-byte store); thread t converts kGroups units, t, t + 256,
// ... from blockIdx.x * 256 * kGroups, loads first. Every load and store
// instruction of a warp covers one contiguous span. Value i has channel i % 3,
// so a unit's factors are the three channels' rotated by its first value's
// channel.
template <typename out_t>
__global__ void __launch_bounds__(kThreads) normalize_channels_last_kernel(
    const uint8_t* __restrict__ images,
    out_t* __restrict__ out,
    int64_t units,
    Affine affine) {
  constexpr int P = Unit<out_t>::kPixels;
  constexpr int kGroups = 4;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads * kGroups + threadIdx.x;

  uint32_t w[kGroups][P / 4];
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int64_t u = first + g * kThreads;
    if (u < units) {
      if constexpr (P == 4) {
        w[g][0] = __ldg(reinterpret_cast<const uint32_t*>(images) + u);
      } else {
        const uint2 pair = __ldg(reinterpret_cast<const uint2*>(images) + u);
        w[g][0] = pair.x;
        w[g][1] = pair.y;
      }
    }
  }
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int64_t u = first + g * kThreads;
    if (u >= units) {
      break;
    }
    const int phase = static_cast<int>((u * P) % 3);
    float scale[3], bias[3];
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const int c = phase + j < 3 ? phase + j : phase + j - 3;
      scale[j] = c == 0 ? affine.scale[0] : (c == 1 ? affine.scale[1] : affine.scale[2]);
      bias[j] = c == 0 ? affine.bias[0] : (c == 1 ? affine.bias[1] : affine.bias[2]);
    }
    float v[P];
#pragma unroll
    for (int k = 0; k < P; ++k) {
      v[k] = fmaf(byte_at(w[g], k), scale[k % 3], bias[k % 3]);
    }
    store_unit(out + u * P, v);
  }
}

// General path: bilinear resize (also exact identity when the sizes match)
// and normalisation in one pass. Thread q of image blockIdx.y produces 4
// consecutive outputs of one row; neighbouring threads read neighbouring
// source bytes (served by L1) and write contiguous output. `vector_store`
// needs out_w % 4 == 0 and an aligned output; `channels_last` writes the
// values interleaved, one at a time.
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
    bool channels_last,
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
  if (channels_last) {
    out_t* dst = out + ((n * out_h + y) * out_w + x_first) * 3;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (x_first + k < out_w) {
#pragma unroll
        for (int c = 0; c < 3; ++c) {
          store1(dst + 3 * k + c, v[c][k]);
        }
      }
    }
    return;
  }
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
    bool channels_last,
    const Affine& affine,
    cudaStream_t stream) {
  const int64_t in_image = plan.in_h * plan.in_w * 3;
  const int64_t out_image = 3 * plan.out_h * plan.out_w;
  const int hw = static_cast<int>(plan.in_h * plan.in_w);
  constexpr int P = Unit<out_t>::kPixels;
  const bool direct = !plan.resize && hw % P == 0 && is_aligned(in, P) &&
      is_aligned(out, 16);
  const bool interleaved = direct && channels_last;
  const int units_per_block = kThreads * (16 / P);
  const int quads = static_cast<int>((plan.out_w + 3) / 4 * plan.out_h);
  const bool vector_store = plan.out_w % 4 == 0 && is_aligned(out, 4 * sizeof(out_t));
  for (int64_t start = 0; start < plan.batch; start += kChunk) {
    const unsigned images = static_cast<unsigned>(std::min(kChunk, plan.batch - start));
    const uint8_t* chunk_in = in + start * in_image;
    out_t* chunk_out = out + start * out_image;
    if (interleaved) {
      const int64_t units = images * in_image / P;
      const int64_t blocks = (units + kThreads * 4 - 1) / (kThreads * 4);
      normalize_channels_last_kernel<out_t>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(chunk_in, chunk_out, units, affine);
    } else if (direct) {
      const dim3 grid((hw / P + units_per_block - 1) / units_per_block, images);
      normalize_kernel<out_t><<<grid, kThreads, 0, stream>>>(chunk_in, chunk_out, hw, affine);
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
          channels_last,
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
    at::ScalarType dtype,
    bool channels_last) {
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
  at::Tensor out = detail::empty_output(images, plan, dtype, channels_last);
  Affine affine{};
  for (int c = 0; c < 3; ++c) {
    affine.scale[c] = plan.scale[c];
    affine.bias[c] = plan.bias[c];
  }
  // The caller's stream (e.g. under `with torch.cuda.stream(s)`), no sync.
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const uint8_t* in = images.const_data_ptr<uint8_t>();
  if (dtype == at::kFloat) {
    launch(in, out.mutable_data_ptr<float>(), plan, channels_last, affine, stream);
  } else {
    launch(in, static_cast<__half*>(out.mutable_data_ptr()), plan, channels_last, affine, stream);
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(torchrl_reward, CUDA, m) {
  m.impl(TORCH_SELECTIVE_NAME("torchrl_reward::preprocess"), TORCH_FN(preprocess_cuda));
}

} // namespace ops
} // namespace torchrl_reward
