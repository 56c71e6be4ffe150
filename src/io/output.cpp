// Atomic output directories and files (see output.hpp for the policy, docs/outputs.md for users).
#include "io/output.hpp"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <system_error>
#include <vector>

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

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// What a refused --out is, in the words of the messages.
std::string kind_of(fs::file_type t) {
  switch (t) {
    case fs::file_type::regular: return "a file";
    case fs::file_type::directory: return "a folder";
    case fs::file_type::symlink: return "a symbolic link";
    case fs::file_type::fifo: return "a FIFO (named pipe)";
    case fs::file_type::character: return "a character device";
    case fs::file_type::block: return "a block device";
    case fs::file_type::socket: return "a socket";
    default: return "a special file";
  }
}

// lstat(2) of `p` (symlinks are not followed); not_found when it does not exist.
fs::file_status lstat_of(const fs::path& p, const std::string& what) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(p, ec);
  if (st.type() == fs::file_type::none)
    throw InvalidArgument(what + " " + quoted(p) + ": cannot inspect it (" + ec.message() +
                          "). Check the permissions of its folder");
  return st;
}

void refuse_symlink(const fs::path& p, const std::string& what) {
  throw InvalidArgument(what + " " + quoted(p) +
                        " is a symbolic link: otcal never writes through or replaces a symlink. Name the real "
                        "path it points to, or a new one");
}

void check_parent(const fs::path& p, const std::string& what) {
  std::error_code ec;
  const fs::path parent = parent_of(p);
  if (!fs::is_directory(parent, ec))
    throw InvalidArgument(what + " " + quoted(p) + ": the parent folder " + quoted(parent) +
                          " does not exist. Create it first (mkdir -p)");
  // The temporaries are created beside --out: fail now rather than after the computation.
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    throw InvalidArgument(what + " " + quoted(p) + ": its folder " + quoted(parent) +
                          " is not writable (the output is written beside it first). Choose a writable folder");
}

// mkdtemp/mkstemp create 0700/0600; give outputs the permissions a plain mkdir/creat would.
void apply_umask(const fs::path& p, ::mode_t base) {
  const ::mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(p.c_str(), base & ~mask);
}

// This host's name as it appears in temporary names: letters, digits, '.', '_' and '-' kept,
// anything else '_' (at most 64 characters).
const std::string& host_tag() {
  static const std::string tag = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return std::string("unknown-host");
    std::string s(buf);
    if (s.size() > 64) s.resize(64);
    for (char& c : s)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
    return s;
  }();
  return tag;
}

// "<base>.<tag>-<host>-<pid>-": the temporaries of this process beside `base` (then XXXXXX).
std::string temp_prefix(const fs::path& base, const char* tag) {
  return base.string() + "." + tag + "-" + host_tag() + "-" + std::to_string(::getpid()) + "-";
}

// mkdtemp-style unique sibling: "<base>.<tag>-<host>-<pid>-XXXXXX".
fs::path make_temp_dir(const fs::path& base, const char* tag, const std::string& what) {
  std::string pattern = temp_prefix(base, tag) + "XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    throw InvalidArgument(what + " " + quoted(base) + ": cannot create a temporary folder beside it (" +
                          std::strerror(errno) + "). Check that its folder is writable");
  apply_umask(pattern, 0777);
  return fs::path(pattern);
}

bool is_otcal_output(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::symlink_status(dir / kOutputMarker, ec));
}

// rename(2), or with `may_replace` false renameat2(RENAME_NOREPLACE) so that whatever appeared at
// `to` since the last check is never replaced (plain rename where the filesystem lacks it).
// Returns 0 or the errno.
int move_into_place(const fs::path& from, const fs::path& to, bool may_replace) {
  if (!may_replace) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return errno;
  }
  return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
}

// The temporaries of this process's uncommitted outputs. Creating, committing and deleting a
// temporary happen under `mutex`, so abandon_outputs_in_progress() sees each one either registered
// or gone. Never destroyed: a signal may arrive while static objects are being destroyed at exit.
struct Registry {
  std::mutex mutex;
  std::vector<std::string> paths;
  void add(const fs::path& p) { paths.push_back(p.string()); }
  void drop(const fs::path& p) {
    for (auto it = paths.begin(); it != paths.end(); ++it)
      if (*it == p.string()) {
        paths.erase(it);
        return;
      }
  }
};

Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

// A sibling "<base>.tmp-<host>-<pid>-XXXXXX" / ".old-..." made by a process of this host that is
// gone. Names without host and pid (older otcal versions) are not recognised and left alone.
bool is_stale_temporary(const std::string& name, const std::string& base) {
  for (const char* tag : {".tmp-", ".old-"}) {
    const std::string prefix = base + tag;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());  // <host>-<pid>-XXXXXX
    const std::size_t last = rest.rfind('-');
    if (last == std::string::npos || last == 0 || rest.size() - last - 1 != 6) continue;
    const std::size_t before = rest.rfind('-', last - 1);
    if (before == std::string::npos) continue;
    const std::string host = rest.substr(0, before), pid_text = rest.substr(before + 1, last - before - 1);
    if (host != host_tag() || pid_text.empty() || pid_text.size() > 9 ||
        pid_text.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const long pid = std::stol(pid_text);
    if (pid <= 0 || pid == ::getpid()) continue;
    return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  }
  return false;
}

// Removes the stale temporaries beside `out` and says so on stderr in one line (one write(2), so
// that it never interleaves with other processes' lines).
void remove_stale_siblings(const fs::path& out, const std::string& what) {
  const std::string base = out.filename().string();
  if (base.empty()) return;
  std::error_code ec;
  std::vector<std::string> removed;
  for (fs::directory_iterator it(parent_of(out), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!is_stale_temporary(name, base)) continue;
    std::error_code rm;
    fs::remove_all(it->path(), rm);
    if (!rm) removed.push_back(name);
  }
  if (removed.empty()) return;
  std::string line = "otcal: removed " + std::to_string(removed.size()) + " temporar" +
                     (removed.size() == 1 ? "y" : "ies") + " beside " + what + " " + quoted(out) +
                     " left by interrupted otcal runs on this host:";
  for (const auto& name : removed) line += " " + name;
  line += "\n";
  [[maybe_unused]] const ssize_t w = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

void check_output_dir(const fs::path& dir_in, const std::string& what) {
  const fs::path dir = normalized(dir_in);
  if (dir.empty()) throw InvalidArgument(what + " is empty. Name an output folder");
  const fs::file_status st = lstat_of(dir, what);
  if (fs::exists(st)) {
    if (fs::is_symlink(st)) refuse_symlink(dir, what);
    if (fs::is_regular_file(st))
      throw InvalidArgument(what + " " + quoted(dir) +
                            " exists and is a file, not a folder. Choose a new folder name or remove it");
    if (!fs::is_directory(st))
      throw InvalidArgument(what + " " + quoted(dir) + " is " + kind_of(st.type()) +
                            ", not a folder: otcal replaces only folders it wrote. Choose a new folder name");
    // access(2) alone is not enough: it grants root everything, and root must not turn a
    // read-only folder into a writable one either.
    struct stat sb {};
    if (::stat(dir.c_str(), &sb) != 0 || (sb.st_mode & 0222) == 0 || ::access(dir.c_str(), W_OK) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(sb.st_mode & 07777));
      throw InvalidArgument(what + " " + quoted(dir) + " is a folder without write permission (mode " + mode +
                            "): otcal does not replace it. Choose another folder, or make it writable first");
    }
    std::error_code ec;
    const bool empty = fs::is_empty(dir, ec);
    if (ec)
      throw InvalidArgument(what + " " + quoted(dir) + ": cannot list the folder (" + ec.message() +
                            "). Choose another folder");
    if (!empty && !is_otcal_output(dir))
      throw InvalidArgument(what + " " + quoted(dir) +
                            " is a non-empty folder that otcal did not write. Choose a new or empty folder");
  }
  check_parent(dir, what);
}

void check_output_file(const fs::path& file, const std::string& what) {
  if (file.empty()) throw InvalidArgument(what + " is empty. Name an output file");
  const fs::file_status st = lstat_of(file, what);
  if (fs::exists(st)) {
    if (fs::is_symlink(st)) refuse_symlink(file, what);
    if (fs::is_directory(st))
      throw InvalidArgument(what + " " + quoted(file) + " is a folder. Name a file (e.g. plan.npz)");
    if (!fs::is_regular_file(st))
      throw InvalidArgument(what + " " + quoted(file) + " is " + kind_of(st.type()) +
                            ", not a regular file: otcal replaces only regular files. Name a new file");
  }
  check_parent(file, what);
}

void abandon_outputs_in_progress() {
  Registry& r = registry();
  r.mutex.lock();  // never unlocked: no output may be created or committed after this
  for (const std::string& p : r.paths) {
    // A thread still writing into a temporary folder can add a file between remove_all's listing
    // and its final rmdir; a few more passes catch that.
    for (int pass = 0; pass < 8; ++pass) {
      std::error_code ec;
      fs::remove_all(p, ec);
      if (!fs::exists(fs::symlink_status(p, ec))) break;
    }
  }
}

AtomicOutputDir::AtomicOutputDir(fs::path dir, std::string what) : final_(normalized(std::move(dir))), what_(std::move(what)) {
  check_output_dir(final_, what_);
  remove_stale_siblings(final_, what_);
  std::lock_guard<std::mutex> lock(registry().mutex);
  temp_ = make_temp_dir(final_, "tmp", what_);
  registry().add(temp_);
}

AtomicOutputDir::~AtomicOutputDir() {
  if (committed_) return;
  std::lock_guard<std::mutex> lock(registry().mutex);
  std::error_code ec;
  fs::remove_all(temp_, ec);
  registry().drop(temp_);
}

void AtomicOutputDir::commit() {
  if (committed_) return;
  {
    std::ofstream marker(temp_ / kOutputMarker);
    marker << "written by otcal; this folder may be replaced by a later otcal run\n";
    if (!marker) throw InvalidArgument(what_ + " " + quoted(final_) + ": cannot write into the temporary folder");
  }
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  // Re-check: another process may have created or changed DIR while we computed.
  check_output_dir(final_, what_);
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(final_, ec));
  fs::path old;
  if (exists && !fs::is_empty(final_, ec)) {
    // A previous otcal output: move it aside (over an empty placeholder folder that reserves a
    // unique name) so that the new one appears in one rename.
    old = make_temp_dir(final_, "old", what_);
    if (const int err = move_into_place(final_, old, /*may_replace=*/true)) {
      fs::remove(old, ec);
      throw InvalidArgument(what_ + " " + quoted(final_) + ": cannot replace the previous output (" +
                            std::strerror(err) + ")");
    }
    reg.add(old);
  }
  // rename(2) replaces an empty directory atomically; a missing DIR must still be missing.
  if (const int err = move_into_place(temp_, final_, /*may_replace=*/exists && old.empty())) {
    std::string restore;
    if (!old.empty()) {
      reg.drop(old);  // the previous output: never deleted by an interrupt from here on
      if (move_into_place(old, final_, /*may_replace=*/false) != 0)
        restore = "; the previous output is in " + quoted(old);
    }
    throw InvalidArgument(what_ + " " + quoted(final_) + ": cannot move the finished output into place (" +
                          std::strerror(err) + ")" +
                          (err == EEXIST || err == ENOTEMPTY ? ". Something else appeared there meanwhile" : "") +
                          restore);
  }
  committed_ = true;
  reg.drop(temp_);
  if (!old.empty()) {
    fs::remove_all(old, ec);
    reg.drop(old);
  }
}

AtomicFile::AtomicFile(fs::path file, std::string what) : final_(std::move(file)), what_(std::move(what)) {
  check_output_file(final_, what_);
  remove_stale_siblings(final_, what_);
  std::lock_guard<std::mutex> lock(registry().mutex);
  std::string pattern = temp_prefix(final_, "tmp") + "XXXXXX";
  const int fd = ::mkstemp(pattern.data());
  if (fd < 0)
    throw InvalidArgument(what_ + " " + quoted(final_) + ": cannot create a temporary file beside it (" +
                          std::strerror(errno) + "). Check that its folder is writable");
  ::close(fd);
  temp_ = pattern;
  registry().add(temp_);
  apply_umask(temp_, 0666);
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  std::lock_guard<std::mutex> lock(registry().mutex);
  std::error_code ec;
  fs::remove(temp_, ec);
  registry().drop(temp_);
}

void AtomicFile::commit() {
  if (committed_) return;
  std::lock_guard<std::mutex> lock(registry().mutex);
  check_output_file(final_, what_);
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(final_, ec));  // a regular file, checked above
  if (const int err = move_into_place(temp_, final_, /*may_replace=*/exists))
    throw InvalidArgument(what_ + " " + quoted(final_) + ": cannot move the finished file into place (" +
                          std::strerror(err) + ")" +
                          (err == EEXIST ? ". Something else appeared there meanwhile" : ""));
  committed_ = true;
  registry().drop(temp_);
}

}  // namespace otcal::io
