// SIGINT/SIGTERM: remove the outputs in progress, then die by the signal (see interrupts.hpp).
//
// Why a sigwait() thread and not a signal handler: the cleanup walks folders, allocates and takes
// the output registry's mutex, none of which is async-signal-safe; a handler that interrupted a
// thread holding that mutex (or malloc's lock) would deadlock. Instead the signals are blocked in
// every thread - main() blocks them before any other thread exists, and threads inherit the mask
// (OpenMP's, MPI's, the CUDA runtime's) - so the kernel can deliver them only to the one thread
// that waits in sigwait(). That thread then runs ordinary code: the registry's mutex makes it
// wait for a commit in progress, and a temporary is either still registered (removed) or already
// committed. Afterwards it restores the default action, unblocks the signal in itself and
// raises it, so the process ends exactly as the signal would have ended it.
#include "cli/interrupts.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <thread>

#include "io/output.hpp"

namespace otcal::cli {

namespace {

[[noreturn]] void die_by(int sig) {
  ::signal(sig, SIG_DFL);
  sigset_t just_this;
  sigemptyset(&just_this);
  sigaddset(&just_this, sig);
  ::pthread_sigmask(SIG_UNBLOCK, &just_this, nullptr);
  ::raise(sig);      // delivered to this thread, whose mask now lets it through: the process ends
  ::_exit(128 + sig);  // only if the signal somehow did not end it: the shell's convention
}

}  // namespace

void clean_up_outputs_on_interrupt() {
  sigset_t wanted;
  sigemptyset(&wanted);
  bool any = false;
  for (int sig : {SIGINT, SIGTERM}) {
    struct sigaction inherited {};
    if (::sigaction(sig, nullptr, &inherited) == 0 && inherited.sa_handler == SIG_IGN) continue;
    sigaddset(&wanted, sig);
    any = true;
  }
  if (!any) return;
  if (::pthread_sigmask(SIG_BLOCK, &wanted, nullptr) != 0) return;
  std::thread([wanted] {
    int sig = 0;
    while (::sigwait(&wanted, &sig) != 0) {
    }
    io::abandon_outputs_in_progress();
    die_by(sig);
  }).detach();
}

}  // namespace otcal::cli
