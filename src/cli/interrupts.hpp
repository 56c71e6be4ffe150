#pragma once
// Ctrl-C and `kill` during a run (docs/outputs.md): SIGINT and SIGTERM remove the temporaries of
// the outputs in progress (io::abandon_outputs_in_progress) and then end the process by that
// same signal, so a shell or a scheduler sees "killed by SIGINT" and no `OUT.tmp-*` stays behind.
// SIGKILL cannot be caught: its temporaries are removed by the next run for the same --out.

namespace otcal::cli {

// Call first thing in main(), before any thread exists (MPI, OpenMP, CUDA): it blocks SIGINT and
// SIGTERM in the calling thread, so every thread started later inherits the block, and starts the
// one thread that waits for them. A signal the tool was started with ignored (nohup, a script's
// background job) stays ignored.
void clean_up_outputs_on_interrupt();

}  // namespace otcal::cli
