#pragma once

#include <ATen/core/Tensor.h>

namespace torchrl_reward {
namespace ops {

// uint8 images [N, H, W, 3] -> normalised [N, 3, h, w] (float32 or float16),
// contiguous, or in channels-last memory ([N, h, w, 3] in memory) when
// `channels_last` is set: the layout convolutions run fastest in, written
// directly rather than by a second pass.
//
// out[n, c, y, x] = bilinear(images[n, :, :, c])(y, x) * scale[c] + bias[c]
// with scale = 1 / (255 * std) and bias = -mean / std: the normalisation of
// torchvision's Normalize on [0, 1] images, done as one multiply-add per value.
// The bilinear resize matches torch.nn.functional.interpolate(mode="bilinear",
// align_corners=False, antialias=False) on the float image; with size unset or
// equal to (H, W) there is no resize. Calls the dispatcher, so the kernel is
// picked from the device of `images`.
at::Tensor preprocess(
    const at::Tensor& images,
    at::ArrayRef<double> mean,
    at::ArrayRef<double> std,
    at::OptionalIntArrayRef size,
    at::ScalarType dtype,
    bool channels_last = false);

} // namespace ops
} // namespace torchrl_reward
