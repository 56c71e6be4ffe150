#include "otcal/memory.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <sstream>
#include <string>

#include "otcal/errors.hpp"

namespace otcal {

void* HostResource::do_allocate(StreamHandle, std::size_t bytes, std::size_t alignment) {
  if (bytes == 0) bytes = 1;
  void* p = std::aligned_alloc(alignment, align_up(bytes, alignment));
  if (p == nullptr) throw OutOfMemory("host allocation of " + format_bytes(bytes) + " failed");
  return p;
}

void HostResource::do_deallocate(StreamHandle, void* p, std::size_t, std::size_t) noexcept { std::free(p); }

void* LimitingAdaptor::do_allocate(StreamHandle stream, std::size_t bytes, std::size_t alignment) {
  const std::size_t charged = align_up(bytes, alignment_);
  const std::size_t before = allocated_.fetch_add(charged);
  if (before + charged > limit_) {
    allocated_.fetch_sub(charged);
    throw OutOfBudget("memory budget exceeded: requested " + std::to_string(bytes) + " bytes, " +
                      std::to_string(before) + " of " + std::to_string(limit_) +
                      " bytes in use; raise --memory-budget or lower --batch-size");
  }
  try {
    return upstream_.allocate(stream, bytes, alignment);
  } catch (...) {
    allocated_.fetch_sub(charged);
    throw;
  }
}

void LimitingAdaptor::do_deallocate(StreamHandle stream, void* p, std::size_t bytes,
                                    std::size_t alignment) noexcept {
  upstream_.deallocate(stream, p, bytes, alignment);
  allocated_.fetch_sub(align_up(bytes, alignment_));
}

namespace {
void bump(StatisticsAdaptor::Counter& c, std::int64_t delta) {
  c.value += delta;
  if (c.value > c.peak) c.peak = c.value;
  if (delta > 0) c.total += delta;
}
}  // namespace

void* StatisticsAdaptor::do_allocate(StreamHandle stream, std::size_t bytes, std::size_t alignment) {
  void* p = upstream_.allocate(stream, bytes, alignment);
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& s : scopes_) {
    bump(s.bytes, static_cast<std::int64_t>(bytes));
    bump(s.allocs, 1);
  }
  return p;
}

void StatisticsAdaptor::do_deallocate(StreamHandle stream, void* p, std::size_t bytes,
                                      std::size_t alignment) noexcept {
  upstream_.deallocate(stream, p, bytes, alignment);
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& s : scopes_) {
    bump(s.bytes, -static_cast<std::int64_t>(bytes));
    bump(s.allocs, -1);
  }
}

StatisticsAdaptor::Counter StatisticsAdaptor::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return scopes_.back().bytes;
}

StatisticsAdaptor::Counter StatisticsAdaptor::allocations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return scopes_.back().allocs;
}

void StatisticsAdaptor::push_scope() {
  std::lock_guard<std::mutex> lock(mutex_);
  scopes_.push_back(Scope{});
}

StatisticsAdaptor::Counter StatisticsAdaptor::pop_scope() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (scopes_.size() <= 1) throw InvalidArgument("StatisticsAdaptor::pop_scope without a matching push_scope");
  // Every allocation was already counted in the outer scopes too, so their peaks are current;
  // the inner counter is returned to the caller.
  Scope inner = scopes_.back();
  scopes_.pop_back();
  return inner.bytes;
}

void StatisticsAdaptor::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (scopes_.back().bytes.value != 0)
    throw InvalidArgument("StatisticsAdaptor::reset requires no live allocations (" +
                          std::to_string(scopes_.back().bytes.value) + " bytes live)");
  scopes_.assign(1, Scope{});
}

std::size_t parse_bytes(const std::string& text, const std::string& what) {
  const std::string hint = ": write bytes or a number with a unit, e.g. 512MiB or 8GiB";
  // Digits and one '.', optionally an exponent: no sign, hex, inf or nan that std::stod would take.
  std::size_t pos = 0;
  while (pos < text.size() && (std::isdigit(static_cast<unsigned char>(text[pos])) || text[pos] == '.')) ++pos;
  if (pos < text.size() && (text[pos] == 'e' || text[pos] == 'E') && pos > 0) {
    std::size_t e = pos + 1;
    if (e < text.size() && (text[e] == '+' || text[e] == '-')) ++e;
    const std::size_t digits = e;
    while (e < text.size() && std::isdigit(static_cast<unsigned char>(text[e]))) ++e;
    if (e > digits) pos = e;
  }
  const std::string number = text.substr(0, pos);
  if (number.empty() || number.find_first_of("0123456789") == std::string::npos ||
      std::count(number.begin(), number.end(), '.') > 1)
    throw InvalidArgument(what + " '" + text + "' is not a size" + hint);
  std::string unit = text.substr(pos);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  double mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB" || unit == "K" || unit == "k") mult = 1024.0;
  else if (unit == "MiB" || unit == "M") mult = 1024.0 * 1024;
  else if (unit == "GiB" || unit == "G") mult = 1024.0 * 1024 * 1024;
  else if (unit == "TiB" || unit == "T") mult = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB" || unit == "kB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else if (unit == "TB") mult = 1e12;
  else
    throw InvalidArgument(what + " '" + text + "' has an unknown unit '" + unit +
                          "': use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB");
  // A plain integer of bytes is read exactly (doubles stop being exact above 2^53).
  if (mult == 1 && number.find_first_not_of("0123456789") == std::string::npos) {
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), v);
    if (ec == std::errc::result_out_of_range || v > std::numeric_limits<std::size_t>::max())
      throw InvalidArgument(what + " '" + text + "' does not fit in 64 bits of bytes");
    if (ec != std::errc() || end != number.data() + number.size())
      throw InvalidArgument(what + " '" + text + "' is not a size" + hint);
    if (v == 0) throw InvalidArgument(what + " '" + text + "' must be at least 1 byte");
    return static_cast<std::size_t>(v);
  }
  const double bytes = std::strtod(number.c_str(), nullptr) * mult;
  // 2^64 is the first double a 64-bit size cannot hold; converting it or more is undefined.
  if (!std::isfinite(bytes) || bytes >= 18446744073709551616.0)
    throw InvalidArgument(what + " '" + text + "' does not fit in 64 bits of bytes");
  if (bytes < 1) throw InvalidArgument(what + " '" + text + "' is less than 1 byte" + hint);
  if (bytes != std::floor(bytes))
    throw InvalidArgument(what + " '" + text + "' is " + std::to_string(bytes) +
                          " bytes, not a whole number: give whole bytes or a unit that makes them whole");
  return static_cast<std::size_t>(bytes);
}

std::string format_bytes(std::size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  std::ostringstream os;
  os.precision(u == 0 ? 0 : 2);
  os << std::fixed << v << " " << units[u];
  return os.str();
}

}  // namespace otcal
