#pragma once
// Tiled decoding and encoding: for images larger than memory allows, the latent (or image) is
// processed in overlapping tiles whose outputs are blended with weights that ramp linearly across
// the overlap, so seams fade instead of cutting. The convolutions see a tile's border zero-padded
// and the middle attention sees only its tile, so tiles differ from the untiled result mostly near
// their edges; the overlap hides that (tests/autoencoder measure the agreement).
#include <algorithm>
#include <functional>
#include <vector>

#include <torch/types.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/core/error.hpp"

namespace diffuse::autoencoder {

namespace tiling_detail {

// Start offsets covering [0, size) with tiles of `tile` and at least `overlap` shared.
inline std::vector<std::int64_t> starts(std::int64_t size, std::int64_t tile, std::int64_t overlap) {
  if (size <= tile) return {0};
  std::vector<std::int64_t> s;
  const std::int64_t stride = tile - overlap;
  for (std::int64_t p = 0;; p += stride) {
    if (p + tile >= size) {
      s.push_back(size - tile);
      break;
    }
    s.push_back(p);
  }
  return s;
}

// 1-D weights: linear ramps of length `ramp` at the sides that touch another tile.
inline torch::Tensor ramp(std::int64_t n, std::int64_t ramp, bool left, bool right, torch::TensorOptions o) {
  auto w = torch::ones({n}, o);
  for (std::int64_t i = 0; i < std::min(ramp, n); ++i) {
    const double v = (i + 1.0) / (ramp + 1.0);
    if (left) w[i] = std::min(w[i].item<double>(), v);
    if (right) w[n - 1 - i] = std::min(w[n - 1 - i].item<double>(), v);
  }
  return w;
}

// Applies f tile by tile: input tiles of `tile` (input pixels) overlapping by `overlap`; the output
// is `scale` times larger (or smaller) than the input, with `out_channels` channels.
inline torch::Tensor tiled(const torch::Tensor& x, std::int64_t tile, std::int64_t overlap, double scale,
                           std::int64_t out_channels, const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  if (tile <= overlap || overlap < 0) throw InputError("tiling: the tile must be larger than the overlap");
  const auto h = x.size(2), w = x.size(3);
  const auto oh = static_cast<std::int64_t>(h * scale), ow = static_cast<std::int64_t>(w * scale);
  auto out = torch::zeros({x.size(0), out_channels, oh, ow}, x.options());
  auto weight = torch::zeros({1, 1, oh, ow}, x.options());
  const auto ys = starts(h, std::min(tile, h), overlap), xs = starts(w, std::min(tile, w), overlap);
  const auto th = std::min(tile, h), tw = std::min(tile, w);
  const auto r = static_cast<std::int64_t>(overlap * scale);
  for (std::size_t iy = 0; iy < ys.size(); ++iy)
    for (std::size_t ix = 0; ix < xs.size(); ++ix) {
      const auto y0 = ys[iy], x0 = xs[ix];
      const auto part = f(x.narrow(2, y0, th).narrow(3, x0, tw));
      const auto ph = part.size(2), pw = part.size(3);
      const auto wy = ramp(ph, r, iy > 0, iy + 1 < ys.size(), x.options());
      const auto wx = ramp(pw, r, ix > 0, ix + 1 < xs.size(), x.options());
      const auto wt = (wy.view({1, 1, -1, 1}) * wx.view({1, 1, 1, -1}));
      const auto oy = static_cast<std::int64_t>(y0 * scale), ox = static_cast<std::int64_t>(x0 * scale);
      out.narrow(2, oy, ph).narrow(3, ox, pw).add_(part * wt);
      weight.narrow(2, oy, ph).narrow(3, ox, pw).add_(wt);
    }
  return out / weight;
}

}  // namespace tiling_detail

// Decodes a latent (B, z, h, w) in tiles of `tile` latent pixels overlapping by `overlap`.
inline torch::Tensor decode_tiled(KLAutoencoder& vae, const torch::Tensor& latent, std::int64_t tile = 32,
                                  std::int64_t overlap = 8) {
  return tiling_detail::tiled(latent, tile, overlap, vae->config().factor(), vae->config().in_channels,
                              [&](const torch::Tensor& t) { return vae->decode(t); });
}

// Encodes an image in tiles of `tile` pixels (a multiple of the factor) overlapping by `overlap`;
// returns the blended mean and log-variance.
inline LatentDistribution encode_tiled(KLAutoencoder& vae, const torch::Tensor& image, std::int64_t tile = 256,
                                       std::int64_t overlap = 64) {
  const auto f = vae->config().factor();
  if (tile % f || overlap % f) throw InputError("tiling: tile and overlap must be multiples of the factor");
  const auto moments = tiling_detail::tiled(image, tile, overlap, 1.0 / f, 2 * vae->config().z_channels,
                                            [&](const torch::Tensor& t) {
                                              const auto d = vae->encode(t);
                                              return torch::cat({d.mean, d.logvar}, 1);
                                            });
  const auto m = moments.chunk(2, 1);
  return {m[0], m[1]};
}

}  // namespace diffuse::autoencoder
