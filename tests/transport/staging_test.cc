// GPU payloads through pinned host staging buffers. The same code runs with the host
// copier (ordinary memory standing in for device memory) everywhere, and with the CUDA
// copier where a device exists.
#include <doctest/doctest.h>

#include <cstdio>

#include "scenarios.h"
#include "transport/staging.h"

using namespace janus;
using namespace janus::test;
using transport::StagingChannel;
using transport::StagingCopier;

namespace {

std::string staging_scenario(const std::string& name, const StagingCopier& copier) {
  LocalPair p;
  if (auto e = p.open(name); !e.empty()) return e;
  const size_t cap = 1 << 20;
  const int nbuf = 4;
  StagingChannel sa(*p.a, copier, cap, nbuf), sb(*p.b, copier, cap, nbuf);
  TEST_OK(sa.init());
  TEST_OK(sb.init());
  const size_t sizes[] = {8, 4096, 100000, cap};
  std::vector<void*> src, dst;
  std::vector<char> host(cap);
  for (size_t i = 0; i < std::size(sizes); ++i) {
    src.push_back(copier.alloc_device(cap));
    dst.push_back(copier.alloc_device(cap));
    TEST_EXPECT(src.back() && dst.back(), "device allocation failed");
    fill_bytes(host.data(), sizes[i], 1000 + i);
    TEST_EXPECT(copier.to_device(src[i], host.data(), sizes[i], nullptr) == JANUS_TRANSPORT_OK, "to_device");
  }
  int ctx[std::size(sizes)];
  for (size_t i = 0; i < std::size(sizes); ++i) {
    TEST_OK(sb.recv(p.b_to_a, 50 + i, dst[i], cap, &ctx[i]));
    TEST_OK(sa.send(p.a_to_b, 50 + i, src[i], sizes[i], &ctx[i]));
  }
  TEST_EXPECT(sa.free_buffers() == 0 && !sa.send(p.a_to_b, 1, src[0], 8).ok(), "a fifth staged send should wait");
  std::vector<Completion> ca, cb;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  Completion c[8];
  while ((ca.size() < std::size(sizes) || cb.size() < std::size(sizes)) && std::chrono::steady_clock::now() < deadline) {
    auto na = sa.poll(c, 8);
    TEST_OK(na.status());
    ca.insert(ca.end(), c, c + *na);
    auto nb = sb.poll(c, 8);
    TEST_OK(nb.status());
    cb.insert(cb.end(), c, c + *nb);
  }
  TEST_EXPECT(ca.size() == std::size(sizes) && cb.size() == std::size(sizes), "staged transfers did not finish");
  for (const Completion& x : cb) {
    const size_t i = static_cast<size_t>(static_cast<const int*>(x.user_context) - ctx);
    TEST_EXPECT(i < std::size(sizes), "foreign user context");
    TEST_EXPECT(x.result == JANUS_TRANSPORT_OK && x.bytes == sizes[i], "receive " + std::to_string(i));
    TEST_EXPECT(x.data == dst[i] && x.loan == 0, "completion must name the device buffer, loan ended");
    std::fill(host.begin(), host.end(), 0);
    TEST_EXPECT(copier.to_host(host.data(), dst[i], sizes[i], nullptr) == JANUS_TRANSPORT_OK, "to_host");
    TEST_EXPECT(check_bytes(host.data(), sizes[i], 1000 + i), "device bytes differ for size " + std::to_string(sizes[i]));
  }
  for (const Completion& x : ca) TEST_EXPECT(x.result == JANUS_TRANSPORT_OK, "send failed");
  TEST_EXPECT(sa.free_buffers() == nbuf && sb.free_buffers() == nbuf, "staging buffers not returned");
  // Staging buffers are registered once each, at init.
  TEST_EXPECT(p.a->counters().registrations == nbuf, "sender registrations " + std::to_string(p.a->counters().registrations));
  TEST_EXPECT(p.b->counters().registrations == nbuf, "receiver registrations");
  for (void* d : src) copier.free_device(d);
  for (void* d : dst) copier.free_device(d);
  return "";
}

}  // namespace

TEST_CASE("staging (host copier): inproc") { CHECK(staging_scenario("inproc", *transport::host_copier()) == ""); }

TEST_CASE("staging (host copier): shm and tcp") {
  CHECK(run_in_child([] { return staging_scenario("shm", *transport::host_copier()); }) == "");
  CHECK(run_in_child([] { return staging_scenario("tcp", *transport::host_copier()); }) == "");
}

TEST_CASE("staging (CUDA copier): device memory over shm") {
  const StagingCopier* cuda = transport::cuda_copier();
  if (cuda == nullptr) {
    std::printf("SKIPPED: no CUDA device (built without CUDA)\n");
    return;
  }
  // CUDA is initialised only in the child: the runner must stay fork-safe.
  const std::string r = run_in_child([cuda]() -> std::string {
    if (cuda->device_count() == 0) return "no device";
    return staging_scenario("shm", *cuda);
  });
  if (r == "no device") {
    std::printf("SKIPPED: no CUDA device\n");
    return;
  }
  CHECK(r == "");
}
