// Memory registrations looked up by address: a post finds the region that covers its
// buffer, so pools registered once are reused by every message that lives in them.
// Provider-neutral (the handle is whatever the provider returned); not thread safe (one
// per endpoint, driven by the endpoint's thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

namespace janus::transport {

struct MemoryRegion {
  uintptr_t begin = 0, end = 0;  // [begin, end)
  void* handle = nullptr;        // the provider's registration (fid_mr*), or null
  void* desc = nullptr;          // what posts pass as the local descriptor
  bool explicit_ = false;        // from reg_mr (else registered on first use)

  bool covers(const void* p, size_t n) const {
    const auto b = reinterpret_cast<uintptr_t>(p);
    return b >= begin && b + n <= end && b + n >= b;
  }
};

class RegistrationCache {
 public:
  /// The region covering [p, p + n), or null. The last hit is checked first, then the
  /// regions that start at or below p, nearest first (overlaps are rare: a few steps).
  MemoryRegion* find(const void* p, size_t n) {
    if (last_ && last_->covers(p, n)) return last_;
    const auto b = reinterpret_cast<uintptr_t>(p);
    auto it = regions_.upper_bound(b);
    for (int steps = 0; it != regions_.begin() && steps < 16; ++steps) {
      --it;
      if (it->second->covers(p, n)) return last_ = it->second.get();
    }
    return nullptr;
  }

  MemoryRegion* insert(const MemoryRegion& r) {
    auto owned = std::make_unique<MemoryRegion>(r);
    MemoryRegion* raw = owned.get();
    regions_.emplace(r.begin, std::move(owned));
    return last_ = raw;
  }

  /// Removes `r` (a pointer insert returned); false when it is not here.
  bool erase(const MemoryRegion* r) {
    auto [lo, hi] = regions_.equal_range(r->begin);
    for (auto it = lo; it != hi; ++it) {
      if (it->second.get() == r) {
        if (last_ == r) last_ = nullptr;
        regions_.erase(it);
        return true;
      }
    }
    return false;
  }

  /// `r` may already be erased (and freed): it is compared, never read.
  bool contains(const MemoryRegion* r) const {
    for (const auto& entry : regions_)
      if (entry.second.get() == r) return true;
    return false;
  }

  size_t size() const { return regions_.size(); }

  /// Calls f(region) for every region (to deregister them all at close).
  template <class F>
  void for_each(F&& f) {
    for (auto& [b, r] : regions_) f(*r);
  }

 private:
  std::multimap<uintptr_t, std::unique_ptr<MemoryRegion>> regions_;
  MemoryRegion* last_ = nullptr;
};

}  // namespace janus::transport
