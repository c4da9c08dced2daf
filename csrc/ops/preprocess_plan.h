#pragma once

// Input checks and derived sizes shared by the CPU and CUDA kernels of
// torchrl_reward::preprocess, so both reject the same inputs with the same messages.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

namespace torchrl_reward {
namespace ops {
namespace detail {

// "torch.float32" rather than "Float": the name Python users write.
inline std::string dtype_name(at::ScalarType dtype) {
  return "torch." + std::string(c10::getDtypeNames(dtype).first);
}

// Numbers in error messages are formatted with the C library, not iostreams:
// an extension built by one g++ and loaded beside another libstdc++ crashed
// inserting an int64 into an ostream (seen on a CUDA 13 / torch 2.11 image).
inline std::string number_str(int64_t value) {
  return std::to_string(value);
}

inline std::string number_str(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

// "[2, 8, 8, 3]": a shape or value list as Python prints it.
template <typename T>
std::string list_str(c10::ArrayRef<T> values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    out += (i ? ", " : "") + number_str(values[i]);
  }
  return out + "]";
}

struct PreprocessPlan {
  int64_t batch;
  int64_t in_h;
  int64_t in_w;
  int64_t out_h;
  int64_t out_w;
  bool resize;
  // Per-channel multiply-add: out = value * scale[c] + bias[c], value in [0, 255].
  std::array<float, 3> scale;
  std::array<float, 3> bias;
};

inline PreprocessPlan make_plan(
    const at::Tensor& images,
    at::ArrayRef<double> mean,
    at::ArrayRef<double> std,
    at::OptionalIntArrayRef size,
    at::ScalarType dtype) {
  TORCH_CHECK_TYPE(
      images.scalar_type() == at::kByte,
      "preprocess: images must be uint8 [N, H, W, 3], got dtype ",
      dtype_name(images.scalar_type()),
      "; pass the raw camera frames");
  TORCH_CHECK_VALUE(
      images.dim() == 4 && images.size(3) == 3,
      "preprocess: images must have shape [N, H, W, 3] (channels last, RGB), got ",
      list_str(images.sizes()),
      "; for [N, 3, H, W] use images.permute(0, 2, 3, 1).contiguous()");
  TORCH_CHECK_VALUE(
      images.is_contiguous(),
      "preprocess: images must be contiguous, got shape ",
      list_str(images.sizes()),
      " with strides ",
      list_str(images.strides()),
      "; call images.contiguous()");
  TORCH_CHECK_VALUE(
      images.numel() > 0,
      "preprocess: images of shape ",
      list_str(images.sizes()),
      " hold no pixels; pass a non-empty batch");
  TORCH_CHECK_TYPE(
      dtype == at::kFloat || dtype == at::kHalf,
      "preprocess: dtype must be torch.float32 or torch.float16, got ",
      dtype_name(dtype));
  TORCH_CHECK_VALUE(
      mean.size() == 3 && std.size() == 3,
      "preprocess: mean and std need one value per RGB channel, got ",
      list_str(mean),
      " and ",
      list_str(std));

  PreprocessPlan plan{};
  plan.batch = images.size(0);
  plan.in_h = images.size(1);
  plan.in_w = images.size(2);
  plan.out_h = plan.in_h;
  plan.out_w = plan.in_w;
  if (size.has_value()) {
    const auto hw = *size;
    TORCH_CHECK_VALUE(
        hw.size() == 2 && hw[0] > 0 && hw[1] > 0,
        "preprocess: size must be [height, width] with positive values, got ",
        list_str(hw));
    plan.out_h = hw[0];
    plan.out_w = hw[1];
  }
  plan.resize = plan.out_h != plan.in_h || plan.out_w != plan.in_w;
  for (size_t c = 0; c < 3; ++c) {
    TORCH_CHECK_VALUE(
        std::isfinite(std[c]) && std[c] != 0.0 && std::isfinite(mean[c]),
        "preprocess: mean must be finite and std finite and non-zero, got mean ",
        list_str(mean),
        " and std ",
        list_str(std));
    plan.scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    plan.bias[c] = static_cast<float>(-mean[c] / std[c]);
  }
  return plan;
}

// The output of a plan: [N, 3, h, w] of `dtype`, contiguous or channels-last.
inline at::Tensor empty_output(
    const at::Tensor& images,
    const PreprocessPlan& plan,
    at::ScalarType dtype,
    bool channels_last) {
  return at::empty(
      {plan.batch, 3, plan.out_h, plan.out_w},
      images.options().dtype(dtype).memory_format(
          channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
}

// Source index and weight of output row/column `dst` for a linear resize from
// `in_size` to `out_size` (`scale` = in_size / out_size): half-pixel centres,
// clamped at the border, as in ATen's upsample_bilinear2d with
// align_corners=False. The sample is v[i0] * (1 - lambda) + v[i1] * lambda.
struct LinearTap {
  int64_t i0;
  int64_t i1;
  float lambda;
};

C10_HOST_DEVICE inline LinearTap
linear_tap(int64_t dst, int64_t in_size, float scale) {
  float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  src = src < 0.f ? 0.f : src;
  int64_t i0 = static_cast<int64_t>(src);
  i0 = i0 < in_size - 1 ? i0 : in_size - 1;
  float lambda = src - static_cast<float>(i0);
  lambda = lambda < 0.f ? 0.f : (lambda > 1.f ? 1.f : lambda);
  const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  return {i0, i1, lambda};
}

} // namespace detail
} // namespace ops
} // namespace torchrl_reward
