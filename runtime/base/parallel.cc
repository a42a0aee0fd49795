#include "runtime/base/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace janus {
namespace {

thread_local bool t_serial = false;

class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool();  // leaked on purpose: workers may outlive static destructors
    return *pool;
  }

  void set_threads(int n) {
    std::lock_guard<std::mutex> region(region_mu_);
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    wanted_ = n;
  }
  int threads() const { return wanted_; }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    grain = std::max<int64_t>(grain, 1);
    int64_t max_chunks = (n + grain - 1) / grain;
    if (t_serial || wanted_ <= 1 || max_chunks <= 1) {
      fn(0, n);
      return;
    }
    std::unique_lock<std::mutex> region(region_mu_, std::try_to_lock);
    if (!region.owns_lock()) {  // another thread's region holds the pool: run here
      fn(0, n);
      return;
    }
    ensure_workers(wanted_ - 1);
    int participants = wanted_.load();
    int64_t chunks = std::min<int64_t>(max_chunks, static_cast<int64_t>(participants) * 4);
    int64_t chunk = (n + chunks - 1) / chunks;
    chunks = (n + chunk - 1) / chunk;
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      job_n_ = n;
      job_chunk_ = chunk;
      job_chunks_ = chunks;
      next_.store(0);
      pending_ = chunks;
      active_workers_ = participants - 1;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0 && active_workers_ == 0; });
    job_ = nullptr;
  }

 private:
  Pool() { wanted_ = static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      int id = static_cast<int>(workers_.size());
      // A worker added after earlier regions starts at the current generation: from 0 it
      // would take one stale pass and count itself out of the next region twice.
      uint64_t start;
      {
        std::lock_guard<std::mutex> lk(mu_);
        start = generation_;
      }
      workers_.emplace_back([this, id, start] { worker_loop(id, start); });
      workers_.back().detach();
    }
  }

  // Pulls chunks until none are left; returns the number it ran.
  void work() {
    int64_t ran = 0;
    for (;;) {
      int64_t c = next_.fetch_add(1);
      if (c >= job_chunks_) break;
      int64_t begin = c * job_chunk_;
      int64_t end = std::min(job_n_, begin + job_chunk_);
      (*job_)(begin, end);
      ++ran;
    }
    if (ran > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      pending_ -= ran;
      if (pending_ == 0) done_cv_.notify_all();
    }
  }

  void worker_loop(int id, uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        // Workers beyond this region's participant count sit it out.
        if (id >= active_workers_total()) continue;
      }
      work();
      std::lock_guard<std::mutex> lk(mu_);
      if (--active_workers_ == 0) done_cv_.notify_all();
    }
  }

  int active_workers_total() const { return wanted_ - 1; }

  std::mutex region_mu_;  // one parallel region at a time
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  std::atomic<int> wanted_{1};
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0, job_chunk_ = 1, job_chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int64_t pending_ = 0;
  int active_workers_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace

void set_cpu_threads(int n) { Pool::get().set_threads(n); }
int cpu_threads() { return Pool::get().threads(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  Pool::get().run(n, grain, fn);
}

SerialRegion::SerialRegion() : previous_(t_serial) { t_serial = true; }
SerialRegion::~SerialRegion() { t_serial = previous_; }

}  // namespace janus
