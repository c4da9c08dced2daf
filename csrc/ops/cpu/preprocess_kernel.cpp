#include "../preprocess_plan.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace torchrl_reward {
namespace ops {

namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// The hot loops are compiled for AVX-512, AVX2+FMA and baseline x86-64; the
// loader picks the best one for the machine (no -march flag in the build).
#define TORCHRL_REWARD_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TORCHRL_REWARD_VECTOR_CLONES
#endif

// float16 output is written as IEEE binary16 bits, converted by hand so the
// loops vectorise at every x86 level (compilers keep a cast to at::Half or
// _Float16 scalar without AVX512-FP16).
using half_bits_t = uint16_t;

// std::bit_cast without C++20: torch's extension builder picks the language
// standard (C++17 in older torch releases). Compilers lower the copy to a move.
template <typename To, typename From>
C10_ALWAYS_INLINE To bits_as(From value) {
  static_assert(sizeof(To) == sizeof(From), "bits_as keeps the size");
  To out;
  std::memcpy(&out, &value, sizeof(To));
  return out;
}
static_assert(sizeof(half_bits_t) == sizeof(at::Half), "float16 is 2 bytes");

// Round to nearest even, subnormals, overflow to inf and NaN included: the
// branch-free algorithm of c10::detail::fp16_ieee_from_fp32_value, rewritten
// with signed 32-bit integer ops and masks instead of unsigned compares and
// selects, which AVX2 and SSE cannot vectorise. Checked against a hardware
// conversion on all 2^32 float bit patterns.
C10_ALWAYS_INLINE half_bits_t half_bits(float f) {
  const int32_t w = bits_as<int32_t>(f);
  const int32_t abs_w = w & 0x7fffffff;
  // Power-of-two scalings: exact, or inf for values beyond the float16 range.
  float base = (bits_as<float>(abs_w) * 0x1.0p+112f) * 0x1.0p-110f;
  // Adding a power of two just above |f| rounds its mantissa to 10 bits.
  const int32_t exponent = std::max(abs_w >> 23, 113);
  base += bits_as<float>((exponent + 15) << 23);
  const int32_t bits = bits_as<int32_t>(base);
  const int32_t nonsign = ((bits >> 13) & 0x7c00) + (bits & 0x0fff);
  const int32_t nan = -static_cast<int32_t>(abs_w > 0x7f800000);
  return static_cast<half_bits_t>(
      ((w >> 16) & 0x8000) | (nonsign & ~nan) | (0x7e00 & nan));
}

template <typename out_t>
C10_ALWAYS_INLINE out_t cast_out(float v);

template <>
C10_ALWAYS_INLINE float cast_out<float>(float v) {
  return v;
}

template <>
C10_ALWAYS_INLINE half_bits_t cast_out<half_bits_t>(float v) {
  return half_bits(v);
}

// Pixels handed to one thread at a time (no-resize path).
constexpr int64_t kPixelGrain = 16384;

// `count` interleaved RGB pixels -> three planes, one multiply-add per value.
template <typename out_t>
C10_ALWAYS_INLINE void normalize_pixels_impl(
    const uint8_t* __restrict in,
    out_t* __restrict r,
    out_t* __restrict g,
    out_t* __restrict b,
    int64_t count,
    const float* scale,
    const float* bias) {
  const float s0 = scale[0], s1 = scale[1], s2 = scale[2];
  const float b0 = bias[0], b1 = bias[1], b2 = bias[2];
  for (int64_t i = 0; i < count; ++i) {
    r[i] = cast_out<out_t>(static_cast<float>(in[3 * i]) * s0 + b0);
    g[i] = cast_out<out_t>(static_cast<float>(in[3 * i + 1]) * s1 + b1);
    b[i] = cast_out<out_t>(static_cast<float>(in[3 * i + 2]) * s2 + b2);
  }
}

TORCHRL_REWARD_VECTOR_CLONES void normalize_pixels(
    const uint8_t* __restrict in,
    float* __restrict r,
    float* __restrict g,
    float* __restrict b,
    int64_t count,
    const float* scale,
    const float* bias) {
  normalize_pixels_impl(in, r, g, b, count, scale, bias);
}

TORCHRL_REWARD_VECTOR_CLONES void normalize_pixels(
    const uint8_t* __restrict in,
    half_bits_t* __restrict r,
    half_bits_t* __restrict g,
    half_bits_t* __restrict b,
    int64_t count,
    const float* scale,
    const float* bias) {
  normalize_pixels_impl(in, r, g, b, count, scale, bias);
}

// Channels-last output keeps the input's interleaved order, so the conversion
// is elementwise over `count` values (a whole number of pixels). The channel
// of value i is i % 3; `scale` and `bias` hold the per-channel factors
// repeated to kPeriod values, a loop the compiler vectorises.
constexpr int kPeriod = 48;

template <typename out_t>
C10_ALWAYS_INLINE void normalize_values_impl(
    const uint8_t* __restrict in,
    out_t* __restrict out,
    int64_t count,
    const float* __restrict scale,
    const float* __restrict bias) {
  int64_t i = 0;
  for (; i + kPeriod <= count; i += kPeriod) {
    for (int j = 0; j < kPeriod; ++j) {
      out[i + j] = cast_out<out_t>(static_cast<float>(in[i + j]) * scale[j] + bias[j]);
    }
  }
  for (int j = 0; i + j < count; ++j) {
    out[i + j] = cast_out<out_t>(static_cast<float>(in[i + j]) * scale[j] + bias[j]);
  }
}

TORCHRL_REWARD_VECTOR_CLONES void normalize_values(
    const uint8_t* __restrict in,
    float* __restrict out,
    int64_t count,
    const float* scale,
    const float* bias) {
  normalize_values_impl(in, out, count, scale, bias);
}

TORCHRL_REWARD_VECTOR_CLONES void normalize_values(
    const uint8_t* __restrict in,
    half_bits_t* __restrict out,
    int64_t count,
    const float* scale,
    const float* bias) {
  normalize_values_impl(in, out, count, scale, bias);
}

// Horizontal pass of the resize: one source row of interleaved RGB bytes ->
// three planes of `out_w` floats (`dst` holds 3 * out_w values). The row is
// first widened to floats in `scratch` (3 * in_w, a vectorised loop) so the
// resampling loop only gathers floats; `x0`/`x1` are the offsets of the two
// source pixels in that row, `w0`/`w1` their weights.
TORCHRL_REWARD_VECTOR_CLONES void resample_row(
    const uint8_t* __restrict src,
    int64_t in_w,
    float* __restrict scratch,
    const int32_t* __restrict x0,
    const int32_t* __restrict x1,
    const float* __restrict w0,
    const float* __restrict w1,
    int64_t out_w,
    float* __restrict dst) {
  for (int64_t i = 0; i < 3 * in_w; ++i) {
    scratch[i] = static_cast<float>(src[i]);
  }
  for (int c = 0; c < 3; ++c) {
    const float* __restrict row = scratch + c;
    float* __restrict plane = dst + c * out_w;
    for (int64_t x = 0; x < out_w; ++x) {
      plane[x] = row[x0[x]] * w0[x] + row[x1[x]] * w1[x];
    }
  }
}

// Vertical pass and normalisation: blends two horizontally resampled rows and
// writes one output row, as three channel planes `plane_stride` apart or, when
// `kInterleaved`, as one channels-last row of RGB values.
template <bool kInterleaved, typename out_t>
C10_ALWAYS_INLINE void blend_rows_impl(
    const float* __restrict top,
    const float* __restrict bottom,
    float wy0,
    float wy1,
    int64_t out_w,
    int64_t plane_stride,
    out_t* __restrict out,
    const float* scale,
    const float* bias) {
  for (int c = 0; c < 3; ++c) {
    const float s = scale[c];
    const float o = bias[c];
    const float* __restrict t = top + c * out_w;
    const float* __restrict u = bottom + c * out_w;
    for (int64_t x = 0; x < out_w; ++x) {
      const out_t v = cast_out<out_t>((t[x] * wy0 + u[x] * wy1) * s + o);
      if constexpr (kInterleaved) {
        out[3 * x + c] = v;
      } else {
        out[c * plane_stride + x] = v;
      }
    }
  }
}

TORCHRL_REWARD_VECTOR_CLONES void blend_rows(
    const float* __restrict top,
    const float* __restrict bottom,
    float wy0,
    float wy1,
    int64_t out_w,
    int64_t plane_stride,
    bool interleaved,
    float* __restrict out,
    const float* scale,
    const float* bias) {
  if (interleaved) {
    blend_rows_impl<true>(top, bottom, wy0, wy1, out_w, plane_stride, out, scale, bias);
  } else {
    blend_rows_impl<false>(top, bottom, wy0, wy1, out_w, plane_stride, out, scale, bias);
  }
}

TORCHRL_REWARD_VECTOR_CLONES void blend_rows(
    const float* __restrict top,
    const float* __restrict bottom,
    float wy0,
    float wy1,
    int64_t out_w,
    int64_t plane_stride,
    bool interleaved,
    half_bits_t* __restrict out,
    const float* scale,
    const float* bias) {
  if (interleaved) {
    blend_rows_impl<true>(top, bottom, wy0, wy1, out_w, plane_stride, out, scale, bias);
  } else {
    blend_rows_impl<false>(top, bottom, wy0, wy1, out_w, plane_stride, out, scale, bias);
  }
}

template <typename out_t>
void normalize_images(
    const uint8_t* in,
    out_t* out,
    const detail::PreprocessPlan& plan,
    bool channels_last) {
  const int64_t hw = plan.in_h * plan.in_w;
  if (channels_last) {
    float scale[kPeriod], bias[kPeriod];
    for (int j = 0; j < kPeriod; ++j) {
      scale[j] = plan.scale[j % 3];
      bias[j] = plan.bias[j % 3];
    }
    at::parallel_for(0, plan.batch * hw, kPixelGrain, [&](int64_t begin, int64_t end) {
      normalize_values(in + 3 * begin, out + 3 * begin, 3 * (end - begin), scale, bias);
    });
    return;
  }
  // Work is split over all pixels of the batch (OpenMP via at::parallel_for),
  // each piece cut at image boundaries because every image has its own planes.
  at::parallel_for(0, plan.batch * hw, kPixelGrain, [&](int64_t begin, int64_t end) {
    while (begin < end) {
      const int64_t n = begin / hw;
      const int64_t p = begin - n * hw;
      const int64_t count = std::min(end - begin, hw - p);
      out_t* r = out + n * 3 * hw + p;
      normalize_pixels(
          in + begin * 3, r, r + hw, r + 2 * hw, count, plan.scale.data(), plan.bias.data());
      begin += count;
    }
  });
}

template <typename out_t>
void resize_normalize_images(
    const uint8_t* in,
    out_t* out,
    const detail::PreprocessPlan& plan,
    bool channels_last) {
  const int64_t in_h = plan.in_h, in_w = plan.in_w;
  const int64_t out_h = plan.out_h, out_w = plan.out_w;
  const float scale_h = static_cast<float>(in_h) / static_cast<float>(out_h);
  const float scale_w = static_cast<float>(in_w) / static_cast<float>(out_w);

  // Column taps are the same for every row and image: computed once.
  std::vector<int32_t> x0(out_w), x1(out_w);
  std::vector<float> wx0(out_w), wx1(out_w);
  for (int64_t x = 0; x < out_w; ++x) {
    const auto tap = detail::linear_tap(x, in_w, scale_w);
    x0[x] = static_cast<int32_t>(tap.i0 * 3);
    x1[x] = static_cast<int32_t>(tap.i1 * 3);
    wx0[x] = 1.f - tap.lambda;
    wx1[x] = tap.lambda;
  }
  std::vector<detail::LinearTap> ytaps(out_h);
  for (int64_t y = 0; y < out_h; ++y) {
    ytaps[y] = detail::linear_tap(y, in_h, scale_h);
  }

  const int64_t row_bytes = in_w * 3;
  const int64_t plane = out_h * out_w;
  const int64_t grain = std::max<int64_t>(1, kPixelGrain / out_w);
  // Output rows of the whole batch are split across threads; each thread keeps
  // its last two horizontally resampled source rows, slot = row parity, so
  // neighbouring output rows reuse them.
  at::parallel_for(0, plan.batch * out_h, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(2 * 3 * out_w);
    std::vector<float> scratch(3 * in_w);
    int64_t cached[2] = {-1, -1};
    auto source_row = [&](int64_t n, int64_t y) -> const float* {
      const int64_t id = n * in_h + y;
      float* slot = rows.data() + (id & 1) * 3 * out_w;
      if (cached[id & 1] != id) {
        resample_row(
            in + id * row_bytes,
            in_w,
            scratch.data(),
            x0.data(),
            x1.data(),
            wx0.data(),
            wx1.data(),
            out_w,
            slot);
        cached[id & 1] = id;
      }
      return slot;
    };
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / out_h;
      const int64_t y = i - n * out_h;
      const auto& tap = ytaps[y];
      const float* top = source_row(n, tap.i0);
      const float* bottom = source_row(n, tap.i1);
      // Row y of image n starts at value (n * out_h + y) * out_w * 3 in
      // channels-last memory, at n * 3 * plane + y * out_w in planar memory.
      blend_rows(
          top,
          bottom,
          1.f - tap.lambda,
          tap.lambda,
          out_w,
          plane,
          channels_last,
          out + (channels_last ? i * out_w * 3 : n * 3 * plane + y * out_w),
          plan.scale.data(),
          plan.bias.data());
    }
  });
}

// The output is written once, right after allocation, and for a 256-image
// chunk its first-touch page faults (~12,800 for 48 MiB) cost more than the
// conversion. Asking Linux for transparent huge pages before the first write
// cuts them 512-fold, as c10 does for every allocation under
// THP_MEM_ALLOC_ENABLE=1. Only whole 2 MiB pages inside the buffer are
// advised; it is a hint, so a failure changes nothing.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const auto start = reinterpret_cast<uintptr_t>(data);
  const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (start + bytes) & ~(kHugePage - 1);
  if (end > begin) {
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
}

template <typename out_t>
void run(const uint8_t* in, out_t* out, const detail::PreprocessPlan& plan, bool channels_last) {
  if (plan.resize) {
    resize_normalize_images(in, out, plan, channels_last);
  } else {
    normalize_images(in, out, plan, channels_last);
  }
}

at::Tensor preprocess_cpu(
    const at::Tensor& images,
    at::ArrayRef<double> mean,
    at::ArrayRef<double> std,
    at::OptionalIntArrayRef size,
    at::ScalarType dtype,
    bool channels_last) {
  TORCH_CHECK_VALUE(
      images.device().is_cpu(),
      "preprocess (CPU kernel): images must be on the CPU, got device ",
      images.device().str());
  const auto plan = detail::make_plan(images, mean, std, size, dtype);
  at::Tensor out = detail::empty_output(images, plan, dtype, channels_last);
  advise_huge_pages(out.mutable_data_ptr(), out.nbytes());
  const uint8_t* in = images.const_data_ptr<uint8_t>();
  if (dtype == at::kFloat) {
    run(in, out.mutable_data_ptr<float>(), plan, channels_last);
  } else {
    run(in, static_cast<half_bits_t*>(out.mutable_data_ptr()), plan, channels_last);
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(torchrl_reward, CPU, m) {
  m.impl(TORCH_SELECTIVE_NAME("torchrl_reward::preprocess"), TORCH_FN(preprocess_cpu));
}

} // namespace ops
} // namespace torchrl_reward
