#pragma once
// What every harness shares: a scratch folder of its own (readers that take a path get the input as
// a file there) and the rule for outcomes. A reader may refuse an input only with the exception its
// contract names (otcal::InvalidArgument); any other exception is a finding, reported by aborting
// with its message so that libFuzzer saves the input.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "otcal/errors.hpp"

namespace otcal::fuzz {

// A folder under $TMPDIR made once per process (libFuzzer's -fork/-jobs workers get their own).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "otcal-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("otcal fuzz: mkdtemp");
      std::abort();
    }
    return std::filesystem::path(pattern);
  }();
  return dir;
}

inline std::string write_scratch_file(const std::string& name, const char* data, std::size_t size) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data, static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "otcal fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "otcal fuzz: FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs body(); InvalidArgument is the documented refusal; anything else is a finding.
template <class Body>
void expect_accept_or_refuse(Body&& body) {
  try {
    body();
  } catch (const otcal::InvalidArgument& e) {
    if (std::string(e.what()).empty()) finding("InvalidArgument without a message");
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + e.what());
  } catch (...) {
    finding("unexpected non-std exception");
  }
}

}  // namespace otcal::fuzz
