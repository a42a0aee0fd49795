// A small fork-join pool for CPU kernels. Janus keeps its own instead of OpenMP because
// actors call kernels from CAF worker threads: an OpenMP team per calling thread would
// oversubscribe a 2-core machine and spin between regions, stealing the cores the
// actors need. Here threads sleep when idle, one parallel region runs at a time, and a
// region that finds the pool busy (another actor's) simply runs on its caller.
#pragma once

#include <cstdint>
#include <functional>

namespace janus {

/// Sets the number of threads (caller included) a parallel region may use; 0 means the
/// hardware's core count. Takes effect for regions started afterwards.
void set_cpu_threads(int n);
int cpu_threads();

/// Runs fn(begin, end) over disjoint chunks covering [0, n). Chunks hold at least
/// `grain` items. Which thread runs which chunk varies, so fn must write only to
/// outputs owned by its chunk; results are then independent of the thread count.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

/// While alive, parallel_for on this thread runs serially (for actors that share cores).
class SerialRegion {
 public:
  SerialRegion();
  ~SerialRegion();
  SerialRegion(const SerialRegion&) = delete;
  SerialRegion& operator=(const SerialRegion&) = delete;

 private:
  bool previous_;
};

}  // namespace janus
