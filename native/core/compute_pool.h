// The threads that run torchfold's libtorch work.
//
// libtorch's CPU intra-op parallelism is OpenMP, and OpenMP gives every
// calling thread its own team of workers. Work spread over many threads (such
// as libuv's pool, four by default) makes several teams fight over the cores:
// on a 2-core machine ResNet-50 ran ~1.5x slower than from one thread. So all
// work runs here, on a small fixed set of threads this pool owns, each with
// its own team at the configured intra-op count; jobs wait in one FIFO queue.
//
// The count: set_size(n), else TORCHFOLD_COMPUTE_THREADS (1..256), else
// max(1, usable CPUs / intra-op threads), e.g. one on a 2-core machine with
// two intra-op threads. The pool is process-wide (shared by every Node
// environment) and never destroyed: its threads are detached and end with the
// process. Shrinking takes effect as threads finish their current job.
#pragma once

#include <functional>

namespace torchfold::core {

// Queues `job` to run on one of the pool's threads (starting them on first
// use). The job must not throw: wrap it. Thread-safe.
void compute_submit(std::function<void()> job);

// The number of compute threads (the wish, once set or first used).
int compute_threads();

// Sets the number of compute threads (1..256; ERR_INVALID_ARG otherwise).
void set_compute_threads(int n);

}  // namespace torchfold::core
