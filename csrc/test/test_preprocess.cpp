// ctest for torchrl_reward::preprocess on CPU: the op against a naive loop and
// against ATen's upsample_bilinear2d, and clear errors for bad input.

#include "ops/preprocess.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
}

const std::vector<double> kMean = {0.485, 0.456, 0.406};
const std::vector<double> kStd = {0.229, 0.224, 0.225};

// Source index and weight, written out independently of the kernel's helper.
void tap(int64_t dst, int64_t in, int64_t out, int64_t& i0, int64_t& i1, double& w) {
  const double src = std::max(0.0, (dst + 0.5) * in / out - 0.5);
  i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), in - 1);
  i1 = std::min<int64_t>(i0 + 1, in - 1);
  w = src - i0;
}

// Naive double-precision reference, one output value at a time.
at::Tensor naive(const at::Tensor& images, int64_t out_h, int64_t out_w) {
  const int64_t n = images.size(0), in_h = images.size(1), in_w = images.size(2);
  auto out = at::empty({n, 3, out_h, out_w}, at::kDouble);
  auto src = images.accessor<uint8_t, 4>();
  auto dst = out.accessor<double, 4>();
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t y = 0; y < out_h; ++y) {
      int64_t y0, y1;
      double wy;
      tap(y, in_h, out_h, y0, y1, wy);
      for (int64_t x = 0; x < out_w; ++x) {
        int64_t x0, x1;
        double wx;
        tap(x, in_w, out_w, x0, x1, wx);
        for (int64_t c = 0; c < 3; ++c) {
          const double top = src[b][y0][x0][c] * (1 - wx) + src[b][y0][x1][c] * wx;
          const double bottom = src[b][y1][x0][c] * (1 - wx) + src[b][y1][x1][c] * wx;
          const double v = top * (1 - wy) + bottom * wy;
          dst[b][c][y][x] = (v / 255.0 - kMean[c]) / kStd[c];
        }
      }
    }
  }
  return out;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

void check_values(int64_t n, int64_t h, int64_t w, int64_t out_h, int64_t out_w) {
  const auto images = at::randint(0, 256, {n, h, w, 3}, at::kByte);
  const std::vector<int64_t> size = {out_h, out_w};
  const auto ref = naive(images, out_h, out_w);
  const std::string shape = std::to_string(n) + "x" + std::to_string(h) + "x" +
      std::to_string(w) + " -> " + std::to_string(out_h) + "x" + std::to_string(out_w);

  const auto f32 = torchrl_reward::ops::preprocess(images, kMean, kStd, size, at::kFloat);
  expect(f32.scalar_type() == at::kFloat, shape + ": float32 output dtype");
  expect(f32.sizes() == at::IntArrayRef({n, 3, out_h, out_w}), shape + ": output shape");
  expect(f32.is_contiguous(), shape + ": output contiguous");
  const double err32 = max_abs_diff(f32, ref);
  expect(err32 < 1e-4, shape + ": float32 vs naive, max error " + std::to_string(err32));

  const auto f16 = torchrl_reward::ops::preprocess(images, kMean, kStd, size, at::kHalf);
  expect(f16.scalar_type() == at::kHalf, shape + ": float16 output dtype");
  const double err16 = max_abs_diff(f16, ref);
  expect(err16 < 4e-3, shape + ": float16 vs naive, max error " + std::to_string(err16));

  for (const auto dtype : {at::kFloat, at::kHalf}) {
    const auto nhwc = torchrl_reward::ops::preprocess(images, kMean, kStd, size, dtype, true);
    expect(
        nhwc.is_contiguous(at::MemoryFormat::ChannelsLast),
        shape + ": channels_last output in channels-last memory");
    const double err = max_abs_diff(nhwc, ref);
    expect(err < 4e-3, shape + ": channels_last vs naive, max error " + std::to_string(err));
  }

  // ATen's own bilinear resize (what F.interpolate runs), then the same normalisation.
  auto x = images.permute({0, 3, 1, 2}).to(at::kFloat);
  if (out_h != h || out_w != w) {
    x = at::upsample_bilinear2d(x, {out_h, out_w}, /*align_corners=*/false);
  }
  const auto mean = at::tensor(kMean, at::kDouble).view({1, 3, 1, 1});
  const auto std = at::tensor(kStd, at::kDouble).view({1, 3, 1, 1});
  const auto aten = (x.to(at::kDouble) / 255.0 - mean) / std;
  const double err_aten = max_abs_diff(f32, aten);
  expect(err_aten < 1e-5, shape + ": float32 vs ATen, max error " + std::to_string(err_aten));
}

void check_error(
    const std::string& what,
    const std::string& needle,
    const std::function<void()>& fn) {
  try {
    fn();
    expect(false, what + ": no error raised");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    expect(
        msg.find(needle) != std::string::npos,
        what + ": message '" + msg + "' lacks '" + needle + "'");
  }
}

void check_errors() {
  using torchrl_reward::ops::preprocess;
  const auto good = at::randint(0, 256, {2, 8, 8, 3}, at::kByte);
  check_error("float images", "must be uint8", [] {
    preprocess(at::zeros({2, 8, 8, 3}), kMean, kStd, c10::nullopt, at::kFloat);
  });
  check_error("channels first", "[N, H, W, 3]", [] {
    preprocess(at::zeros({2, 3, 8, 8}, at::kByte), kMean, kStd, c10::nullopt, at::kFloat);
  });
  check_error("3-d images", "[N, H, W, 3]", [] {
    preprocess(at::zeros({8, 8, 3}, at::kByte), kMean, kStd, c10::nullopt, at::kFloat);
  });
  check_error("non-contiguous", "contiguous", [&] {
    preprocess(good.transpose(1, 2), kMean, kStd, c10::nullopt, at::kFloat);
  });
  check_error("empty batch", "no pixels", [] {
    preprocess(at::zeros({0, 8, 8, 3}, at::kByte), kMean, kStd, c10::nullopt, at::kFloat);
  });
  check_error("int output dtype", "dtype must be", [&] {
    preprocess(good, kMean, kStd, c10::nullopt, at::kInt);
  });
  check_error("two means", "one value per RGB channel", [&] {
    preprocess(good, std::vector<double>{0.5, 0.5}, kStd, c10::nullopt, at::kFloat);
  });
  check_error("zero std", "non-zero", [&] {
    preprocess(good, kMean, std::vector<double>{0.2, 0.0, 0.2}, c10::nullopt, at::kFloat);
  });
  check_error("negative size", "size must be", [&] {
    preprocess(good, kMean, kStd, std::vector<int64_t>{-1, 4}, at::kFloat);
  });
}

} // namespace

int main() {
  at::manual_seed(0);
  check_values(2, 16, 16, 16, 16); // no resize
  check_values(3, 7, 5, 7, 5); // no resize, odd sizes
  check_values(2, 32, 24, 16, 12); // downsample by 2
  check_values(2, 30, 40, 17, 23); // downsample, non-square, odd
  check_values(2, 10, 12, 25, 31); // upsample, non-square
  check_values(1, 1, 1, 3, 2); // single pixel
  check_errors();
  if (failures > 0) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("test_preprocess: all checks passed\n");
  return 0;
}
