// A value or an error, for every fallible function in chunkd: errors are values, never exceptions
// across module boundaries. Minimal on purpose (C++20 has no std::expected); the error type
// defaults to base::Error, the one error chunkd's layers hand each other.
//
//   Expected<int> parse(...);               // a value or an Error
//   Expected<void> start();                 // success or an Error
//   return fail(std::errc::invalid_argument, "port must be 1..65535");
//
// REQUIRES: value() only when has_value(), error() only when !has_value() (checked always).
#pragma once

#include <utility>
#include <variant>

#include "base/assert.hpp"
#include "base/error.hpp"

namespace chunkd {

template <class E>
struct Unexpected {
  E error;
};
template <class E>
Unexpected<E> unexpected(E e) {
  return Unexpected<E>{std::move(e)};
}

// An Error with its code and a detail that names the cause, ready to return as an Expected.
inline Unexpected<base::Error> fail(std::error_code code, std::string detail = {}) {
  return Unexpected<base::Error>{base::Error{code, std::move(detail)}};
}
inline Unexpected<base::Error> fail(std::errc code, std::string detail = {}) {
  return fail(std::make_error_code(code), std::move(detail));
}

template <class T, class E = base::Error>
class Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Expected(Unexpected<E> e) : v_(std::in_place_index<1>, std::move(e.error)) {}  // NOLINT

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & {
    CHUNKD_ASSERT(has_value());
    return std::get<0>(v_);
  }
  const T& value() const& {
    CHUNKD_ASSERT(has_value());
    return std::get<0>(v_);
  }
  T&& value() && {
    CHUNKD_ASSERT(has_value());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  E& error() & {
    CHUNKD_ASSERT(!has_value());
    return std::get<1>(v_);
  }
  const E& error() const& {
    CHUNKD_ASSERT(!has_value());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, E> v_;
};

// Success, or an error: for operations with nothing to return.
template <class E>
class Expected<void, E> {
 public:
  Expected() = default;
  Expected(Unexpected<E> e) : error_(std::move(e.error)), ok_(false) {}  // NOLINT: implicit

  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const { CHUNKD_ASSERT(ok_); }

  E& error() & {
    CHUNKD_ASSERT(!ok_);
    return error_;
  }
  const E& error() const& {
    CHUNKD_ASSERT(!ok_);
    return error_;
  }

 private:
  E error_{};
  bool ok_ = true;
};

}  // namespace chunkd
