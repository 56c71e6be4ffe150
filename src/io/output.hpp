#pragma once
// Atomic outputs: a command either leaves its complete output or nothing at all.
//
// Output directories (`--out DIR`):
//   - DIR may not exist yet, may be an empty directory, or may be a directory that otcal wrote
//     earlier (it holds the marker file `.otcal-output`); anything else - a file, or a non-empty
//     directory without the marker - is refused with InvalidArgument before any work is done.
//   - Files are written into a temporary sibling `DIR.tmp-XXXXXX` (same filesystem, so the final
//     rename is atomic). commit() writes the marker and renames the temporary directory to DIR; a
//     previous otcal output is first moved aside to `DIR.old-XXXXXX` and removed after the rename.
//   - Without commit() (an exception, a failed solve) the destructor deletes the temporary
//     directory: DIR is never half-written and no temporary is left beside it.
//   - The parent of DIR must exist (it is not created, so a failure leaves nothing behind).
// Single files (`--out PLAN.npz`): AtomicFile writes `PATH.tmp-XXXXXX` and renames it on commit.
#include <filesystem>
#include <string>

namespace otcal::io {

inline constexpr const char* kOutputMarker = ".otcal-output";

// Throws InvalidArgument (naming `what`) if `dir` cannot become an otcal output directory.
// Call it before the computation so bad --out values fail fast.
void check_output_dir(const std::filesystem::path& dir, const std::string& what = "--out");
// Throws InvalidArgument if `file` is a directory or its parent is missing. An existing regular
// file is replaced on commit.
void check_output_file(const std::filesystem::path& file, const std::string& what = "--out");

class AtomicOutputDir {
 public:
  explicit AtomicOutputDir(std::filesystem::path dir, std::string what = "--out");
  ~AtomicOutputDir();
  AtomicOutputDir(const AtomicOutputDir&) = delete;
  AtomicOutputDir& operator=(const AtomicOutputDir&) = delete;

  const std::filesystem::path& final_path() const { return final_; }
  const std::filesystem::path& temp_path() const { return temp_; }
  // Where to write `name` now (inside the temporary directory).
  std::string file(const std::string& name) const { return (temp_ / name).string(); }
  void commit();
  bool committed() const { return committed_; }

 private:
  std::filesystem::path final_, temp_;
  std::string what_;
  bool committed_ = false;
};

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path file, std::string what = "--out");
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::filesystem::path& final_path() const { return final_; }
  std::string temp_path() const { return temp_.string(); }
  void commit();

 private:
  std::filesystem::path final_, temp_;
  std::string what_;
  bool committed_ = false;
};

}  // namespace otcal::io
