#pragma once
// One formula, three value types (torch-free): policies write their formulas once, templated on
// T, and they serve `double` (exact tests), `torch::Tensor` (training) and `xt::xarray<double>`
// (host analysis).
//
// Elementary functions are called unqualified with `using std::f;` in scope, so argument-
// dependent lookup picks at::f for tensors and xt::f for xtensor expressions; results are
// converted back to T, so no lazy xtensor expression escapes (see STYLE.md). Formulas without a
// closed form (table lookups, quantiles, inverses) go through `ValueOps<T>::map`, which applies a
// double -> double function elementwise; torch's specialisation is in core/value_torch.hpp.
#include <cmath>
#include <type_traits>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>

namespace diffuse {

template <class T, class = void>
struct ValueOps {
  static_assert(sizeof(T) == 0,
                "diffuse: no ValueOps for this value type. Policies take double, torch::Tensor (include "
                "diffuse/core/value_torch.hpp) or xt::xarray<double>.");
};

template <class T>
struct ValueOps<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  template <class F>
  static T map(const T& x, F&& f) {
    return static_cast<T>(f(static_cast<double>(x)));
  }
};

template <class E>
struct ValueOps<xt::xarray<E>> {
  template <class F>
  static xt::xarray<E> map(const xt::xarray<E>& x, F&& f) {
    xt::xarray<E> out = x;
    for (auto& v : out) v = static_cast<E>(f(static_cast<double>(v)));
    return out;
  }
};

namespace math {

#define DIFFUSE_UNARY(fn)              \
  template <class T>                   \
  T fn(const T& x) {                   \
    using std::fn;                     \
    return T(fn(x));                   \
  }
DIFFUSE_UNARY(log)
DIFFUSE_UNARY(exp)
DIFFUSE_UNARY(sqrt)
DIFFUSE_UNARY(sin)
DIFFUSE_UNARY(cos)
DIFFUSE_UNARY(tan)
#undef DIFFUSE_UNARY

// A value shaped like `like`, filled with v (for constant terms such as da = -1).
template <class T>
T full_like(const T& like, double v) {
  return T(like * 0.0 + v);
}

// f applied elementwise through double: for functions without a closed form over T.
template <class T, class F>
T map(const T& x, F&& f) {
  return ValueOps<T>::map(x, static_cast<F&&>(f));
}

inline constexpr double pi = 3.14159265358979323846;

}  // namespace math
}  // namespace diffuse
