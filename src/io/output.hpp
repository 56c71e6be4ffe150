#pragma once
// Atomic outputs: a command either leaves its complete output or nothing at all, and never
// replaces anything that is not its own (docs/outputs.md).
//
// Output directories (`--out DIR`):
//   - DIR may not exist yet, may be an empty directory with write permission, or may be a
//     directory that otcal wrote earlier (it holds the marker file `.otcal-output`). Anything else
//     is refused with InvalidArgument before any work is done and again at commit: a symbolic link
//     (never written through or replaced), a file, a FIFO, a device, a socket, a non-empty
//     directory without the marker, a directory without write permission (its mode bits are
//     checked too: root passes access(2) everywhere).
//   - Files are written into a temporary sibling `DIR.tmp-HOST-PID-XXXXXX` (same filesystem, so
//     the final rename is atomic). commit() writes the marker and renames the temporary directory
//     to DIR; a previous otcal output is first moved aside to `DIR.old-HOST-PID-XXXXXX` and
//     removed after the rename.
//   - Without commit() (an exception, a failed solve) the destructor deletes the temporary
//     directory: DIR is never half-written and no temporary is left beside it.
//   - The parent of DIR must exist and be writable (it is not created, so a failure leaves
//     nothing behind).
// Single files (`--out PLAN.npz`): AtomicFile writes `PATH.tmp-HOST-PID-XXXXXX` and renames it on
// commit. PATH may not exist yet or be a regular file (replaced); a symlink, a folder, a FIFO, a
// device or a socket is refused.
//
// Temporaries of interrupted runs: the temporary names carry the host and process id that made
// them. Constructing an output removes the siblings `OUT.tmp-*` / `OUT.old-*` left by processes
// of this host that are gone (kill(pid, 0) fails with ESRCH), saying so on stderr in one line;
// those of live processes or of other hosts are left alone.
//
// Interrupts: the temporaries in progress are registered in this process, and
// abandon_outputs_in_progress() removes them. This library installs no signal handler; the tool
// calls it from its signal thread (src/cli/interrupts.hpp) before ending on SIGINT/SIGTERM.
#include <filesystem>
#include <string>

namespace otcal::io {

inline constexpr const char* kOutputMarker = ".otcal-output";

// Throws InvalidArgument (naming `what`) if `dir` cannot become an otcal output directory.
// Call it before the computation so bad --out values fail fast.
void check_output_dir(const std::filesystem::path& dir, const std::string& what = "--out");
// Throws InvalidArgument if `file` exists and is not a regular file (a symlink, a folder, a FIFO,
// a device, a socket) or its parent is missing. An existing regular file is replaced on commit.
void check_output_file(const std::filesystem::path& file, const std::string& what = "--out");

// Removes the temporaries of every output of this process that is not committed yet, and keeps
// any thread from creating or committing an output afterwards (those calls block): call it only
// on the way out of the process, e.g. from a signal-waiting thread before re-raising SIGINT.
// Thread-safe; not async-signal-safe (it takes a mutex and walks folders), so never call it from
// a signal handler.
void abandon_outputs_in_progress();

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
