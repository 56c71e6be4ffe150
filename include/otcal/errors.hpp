#pragma once
// Error hierarchy. Every message names the offending input and what to do about it.
#include <cstddef>
#include <stdexcept>
#include <string>

namespace otcal {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller-supplied value is out of its domain (shape, range, NaN, unknown option).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// The memory budget cannot hold even the smallest tile; raised before anything is allocated.
class BudgetTooSmall : public Error {
 public:
  BudgetTooSmall(const std::string& what, std::size_t required_bytes)
      : Error(what), required_bytes_(required_bytes) {}
  std::size_t required_bytes() const noexcept { return required_bytes_; }

 private:
  std::size_t required_bytes_;
};

// An allocation would push live bytes past the limiting adaptor's limit.
class OutOfBudget : public Error {
 public:
  using Error::Error;
};

// The upstream allocator itself failed.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// NaN/Inf found by a device validity flag, or a diverging iteration.
class NumericalError : public Error {
 public:
  using Error::Error;
};

// An exact calibrator did not meet its targets (and force was not set).
class CalibrationFailed : public Error {
 public:
  using Error::Error;
};

// A CUDA runtime or library call failed, or CUDA was asked for in a build without it.
class DeviceError : public Error {
 public:
  using Error::Error;
};

}  // namespace otcal
