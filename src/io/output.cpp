// Atomic output directories and files (see output.hpp for the policy).
#include "io/output.hpp"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <system_error>

#include "otcal/errors.hpp"

namespace otcal::io {
namespace fs = std::filesystem;

namespace {

// Strip trailing separators so that "out/" and "out" name the same sibling temporaries.
fs::path normalized(fs::path p) {
  std::string s = p.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return fs::path(s);
}

fs::path parent_of(const fs::path& p) {
  fs::path parent = p.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

void check_parent(const fs::path& p, const std::string& what) {
  std::error_code ec;
  const fs::path parent = parent_of(p);
  if (!fs::is_directory(parent, ec))
    throw InvalidArgument(what + " '" + p.string() + "': the parent folder '" + parent.string() +
                          "' does not exist. Create it first (mkdir -p)");
}

// mkdtemp/mkstemp create 0700/0600; give outputs the permissions a plain mkdir/creat would.
void apply_umask(const fs::path& p, ::mode_t base) {
  const ::mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(p.c_str(), base & ~mask);
}

// mkdtemp/mkstemp-style unique sibling: "<base>.<tag>-XXXXXX".
fs::path make_temp_dir(const fs::path& base, const char* tag, const std::string& what) {
  std::string pattern = base.string() + "." + tag + "-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    throw InvalidArgument(what + " '" + base.string() + "': cannot create a temporary folder beside it (" +
                          std::strerror(errno) + "). Check that its folder is writable");
  apply_umask(pattern, 0777);
  return fs::path(pattern);
}

bool is_otcal_output(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kOutputMarker, ec);
}

}  // namespace

void check_output_dir(const fs::path& dir_in, const std::string& what) {
  const fs::path dir = normalized(dir_in);
  if (dir.empty()) throw InvalidArgument(what + " is empty. Name an output folder");
  std::error_code ec;
  const auto status = fs::symlink_status(dir, ec);
  if (fs::exists(status)) {
    if (!fs::is_directory(status))
      throw InvalidArgument(what + " '" + dir.string() +
                            "' exists and is not a folder. Choose a new folder name or remove it");
    const bool empty = fs::is_empty(dir, ec);
    if (!empty && !is_otcal_output(dir))
      throw InvalidArgument(what + " '" + dir.string() +
                            "' is a non-empty folder that otcal did not write. Choose a new or empty folder");
  }
  check_parent(dir, what);
}

void check_output_file(const fs::path& file, const std::string& what) {
  if (file.empty()) throw InvalidArgument(what + " is empty. Name an output file");
  std::error_code ec;
  if (fs::is_directory(file, ec))
    throw InvalidArgument(what + " '" + file.string() + "' is a folder. Name a file (e.g. plan.npz)");
  check_parent(file, what);
}

AtomicOutputDir::AtomicOutputDir(fs::path dir, std::string what) : final_(normalized(std::move(dir))), what_(std::move(what)) {
  check_output_dir(final_, what_);
  temp_ = make_temp_dir(final_, "tmp", what_);
}

AtomicOutputDir::~AtomicOutputDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(temp_, ec);
}

void AtomicOutputDir::commit() {
  if (committed_) return;
  {
    std::ofstream marker(temp_ / kOutputMarker);
    marker << "written by otcal; this folder may be replaced by a later otcal run\n";
    if (!marker) throw InvalidArgument(what_ + " '" + final_.string() + "': cannot write into the temporary folder");
  }
  // Re-check: another process may have created DIR while we computed.
  check_output_dir(final_, what_);
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_, ec) && !fs::is_empty(final_, ec)) {
    // A previous otcal output: move it aside so the new one appears in one rename.
    old = make_temp_dir(final_, "old", what_);
    fs::remove(old, ec);
    fs::rename(final_, old, ec);
    if (ec)
      throw InvalidArgument(what_ + " '" + final_.string() + "': cannot replace the previous output (" + ec.message() + ")");
  }
  // rename(2) replaces an empty directory atomically.
  fs::rename(temp_, final_, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, final_, ec);
    throw InvalidArgument(what_ + " '" + final_.string() + "': cannot move the finished output into place (" +
                          ec.message() + ")");
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

AtomicFile::AtomicFile(fs::path file, std::string what) : final_(std::move(file)), what_(std::move(what)) {
  check_output_file(final_, what_);
  std::string pattern = final_.string() + ".tmp-XXXXXX";
  const int fd = ::mkstemp(pattern.data());
  if (fd < 0)
    throw InvalidArgument(what_ + " '" + final_.string() + "': cannot create a temporary file beside it (" +
                          std::strerror(errno) + "). Check that its folder is writable");
  ::close(fd);
  temp_ = pattern;
  apply_umask(temp_, 0666);
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  std::error_code ec;
  fs::remove(temp_, ec);
}

void AtomicFile::commit() {
  if (committed_) return;
  check_output_file(final_, what_);
  std::error_code ec;
  fs::rename(temp_, final_, ec);
  if (ec)
    throw InvalidArgument(what_ + " '" + final_.string() + "': cannot move the finished file into place (" +
                          ec.message() + ")");
  committed_ = true;
}

}  // namespace otcal::io
