#include "preprocess.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torchrl_reward {
namespace ops {

at::Tensor preprocess(
    const at::Tensor& images,
    at::ArrayRef<double> mean,
    at::ArrayRef<double> std,
    at::OptionalIntArrayRef size,
    at::ScalarType dtype,
    bool channels_last) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchrl_reward::preprocess", "")
                       .typed<decltype(preprocess)>();
  return op.call(images, mean, std, size, dtype, channels_last);
}

TORCH_LIBRARY_FRAGMENT(torchrl_reward, m) {
  m.def(
      "preprocess(Tensor images, float[] mean, float[] std, int[]? size, "
      "ScalarType dtype, bool channels_last=False) -> Tensor");
}

} // namespace ops
} // namespace torchrl_reward
