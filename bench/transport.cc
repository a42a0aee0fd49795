// bench_transport: half-round-trip latency and windowed bandwidth of Janus's data-plane
// transport (transport/transport.h: frame + payload, registration cache, back-pressure
// handling) between two processes, beside the floor: a raw libfabric RDM tagged ping-pong
// (the recipe of docs/dep-examples/libfabric/rdm_pingpong.cpp) on the same provider and
// sizes, measured in the same run. Each repetition forks a fresh pair of processes for raw
// and then for ours; the table shows the median over repetitions.
//
//   build/bench/bench_transport [--reps 5] [--providers shm,tcp] [--sizes 4096,65536,1048576,16777216] [--no-pin]
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "runtime/base/progress.h"
#include "transport/transport.h"

using namespace janus;

namespace {

constexpr int kWindow = 16;

struct Plan {
  size_t bytes;
  int lat_iters;
  int bw_rounds;
};

Plan plan_for(size_t bytes) {
  // About 20-40 ms of latency and 50-250 ms of bandwidth traffic per size and run.
  const int lat = static_cast<int>(std::clamp<size_t>((64u << 20) / bytes, 16, 2000));
  const int bw = static_cast<int>(std::clamp<size_t>((1u << 30) / (bytes * kWindow), 4, 400));
  return {bytes, lat, bw};
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "[%d] bench_transport: %s\n", getpid(), what.c_str());
  std::fflush(stderr);
  _exit(3);
}

// -- the floor: raw libfabric, exactly the rdm_pingpong recipe ----------------------------

struct RawNode {
  fi_info* info = nullptr;
  fid_fabric* fabric = nullptr;
  fid_domain* domain = nullptr;
  fid_cq* cq = nullptr;
  fid_av* av = nullptr;
  fid_ep* ep = nullptr;
  fid_mr* mr = nullptr;
  void* desc = nullptr;
  char* buf = nullptr;
  fi_addr_t peer = FI_ADDR_UNSPEC;
};

#define RAW_CHK(call)                                                                             \
  do {                                                                                            \
    int rc_ = (call);                                                                             \
    if (rc_) die(std::string(#call) + ": " + fi_strerror(-rc_));                                  \
  } while (0)

void raw_setup(RawNode& n, const char* prov, size_t bufsize) {
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_TAGGED | FI_MSG;
  hints->mode = FI_CONTEXT;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  hints->fabric_attr->prov_name = strdup(prov);
  const bool ip = std::strcmp(prov, "shm") != 0;
  RAW_CHK(fi_getinfo(FI_VERSION(1, 17), ip ? "127.0.0.1" : nullptr, ip ? "0" : nullptr, ip ? FI_SOURCE : 0, hints,
                     &n.info));
  fi_freeinfo(hints);
  RAW_CHK(fi_fabric(n.info->fabric_attr, &n.fabric, nullptr));
  RAW_CHK(fi_domain(n.fabric, n.info, &n.domain, nullptr));
  fi_cq_attr cq_attr{};
  cq_attr.format = FI_CQ_FORMAT_TAGGED;
  cq_attr.wait_obj = FI_WAIT_NONE;
  cq_attr.size = 1024;
  RAW_CHK(fi_cq_open(n.domain, &cq_attr, &n.cq, nullptr));
  fi_av_attr av_attr{};
  av_attr.type = FI_AV_TABLE;
  RAW_CHK(fi_av_open(n.domain, &av_attr, &n.av, nullptr));
  RAW_CHK(fi_endpoint(n.domain, n.info, &n.ep, nullptr));
  RAW_CHK(fi_ep_bind(n.ep, &n.cq->fid, FI_TRANSMIT | FI_RECV));
  RAW_CHK(fi_ep_bind(n.ep, &n.av->fid, 0));
  RAW_CHK(fi_enable(n.ep));
  n.buf = static_cast<char*>(std::aligned_alloc(4096, bufsize));
  std::memset(n.buf, 1, bufsize);
  RAW_CHK(fi_mr_reg(n.domain, n.buf, bufsize, FI_SEND | FI_RECV, 0, 0, 0, &n.mr, nullptr));
  n.desc = fi_mr_desc(n.mr);
}

void raw_teardown(RawNode& n) {
  fi_close(&n.mr->fid);
  fi_close(&n.ep->fid);
  fi_close(&n.av->fid);
  fi_close(&n.cq->fid);
  fi_close(&n.domain->fid);
  fi_close(&n.fabric->fid);
  fi_freeinfo(n.info);
  std::free(n.buf);
}

void raw_wait(RawNode& n, int count) {
  fi_cq_tagged_entry e[16];
  while (count > 0) {
    const ssize_t r = fi_cq_read(n.cq, e, 16);
    if (r > 0) {
      count -= static_cast<int>(r);
      continue;
    }
    if (r == -FI_EAGAIN) continue;
    if (r == -FI_EAVAIL) {
      fi_cq_err_entry err{};
      fi_cq_readerr(n.cq, &err, 0);
      die(std::string("cq error: ") + fi_strerror(err.err));
    }
    die(std::string("fi_cq_read: ") + fi_strerror(static_cast<int>(-r)));
  }
}

template <class F>
void raw_post(RawNode& n, F f, int& pending) {
  for (;;) {
    const ssize_t r = f();
    if (r == 0) return;
    if (r != -FI_EAGAIN) die(std::string("post: ") + fi_strerror(static_cast<int>(-r)));
    fi_cq_tagged_entry e;
    if (fi_cq_read(n.cq, &e, 1) == 1) --pending;  // a completion consumed while retrying
  }
}

// -- ours -----------------------------------------------------------------------------------

struct Ours {
  std::unique_ptr<transport::Endpoint> ep;
  transport::Peer peer = 0;
  char* buf = nullptr;
  void* mr = nullptr;
};

void ours_wait(transport::Endpoint& ep, int count) {
  transport::Completion c[32];
  while (count > 0) {
    auto n = ep.poll(c, 32);
    if (!n.ok()) die(n.status().to_string());
    for (int i = 0; i < *n; ++i)
      if (c[i].result != JANUS_TRANSPORT_OK) die("operation failed: " + std::to_string(c[i].result));
    count -= *n;
  }
}

void ours_ok(const Status& s) {
  if (!s.ok()) die(s.to_string());
}

// -- one process of a pair ------------------------------------------------------------------

struct PairIo {
  int wfd, rfd;
};

void exchange_address(const PairIo& io, const void* mine, size_t len, std::vector<char>* theirs) {
  const uint64_t n = len;
  if (write(io.wfd, &n, sizeof n) != sizeof n || write(io.wfd, mine, len) != static_cast<ssize_t>(len))
    die("address exchange");
  uint64_t m = 0;
  if (read(io.rfd, &m, sizeof m) != sizeof m || m > 4096) die("address exchange");
  theirs->resize(m);
  if (read(io.rfd, theirs->data(), m) != static_cast<ssize_t>(m)) die("address exchange");
}

/// Runs every size on one implementation; the client returns {half-RTT us, GB/s} per size.
std::vector<double> run_side(bool raw, bool server, const std::string& provider, const std::vector<size_t>& sizes,
                             const PairIo& io) {
  size_t max_size = 0;
  for (size_t s : sizes) max_size = std::max(max_size, s);
  const size_t bufsize = max_size * kWindow;
  RawNode rn;
  Ours us;
  fi_context ctx[kWindow + 1];
  if (raw) {
    raw_setup(rn, provider == "tcp" ? "tcp;ofi_rxm" : provider.c_str(), bufsize);
    char name[256];
    size_t len = sizeof name;
    RAW_CHK(fi_getname(&rn.ep->fid, name, &len));
    std::vector<char> peer;
    exchange_address(io, name, len, &peer);
    if (fi_av_insert(rn.av, peer.data(), 1, &rn.peer, 0, nullptr) != 1) die("fi_av_insert");
  } else {
    transport::EndpointConfig cfg;
    cfg.self_id = server ? 1 : 2;
    auto ep = transport::Endpoint::open(provider, cfg);
    if (!ep.ok()) die(ep.status().to_string());
    us.ep = std::move(*ep);
    auto addr = us.ep->address();
    if (!addr.ok()) die(addr.status().to_string());
    std::vector<char> peer;
    exchange_address(io, addr->data(), addr->size(), &peer);
    auto p = us.ep->connect(peer, server ? 2 : 1);
    if (!p.ok()) die(p.status().to_string());
    us.peer = *p;
    us.buf = static_cast<char*>(std::aligned_alloc(4096, bufsize));
    std::memset(us.buf, 1, bufsize);
    auto mr = us.ep->register_memory(us.buf, bufsize);
    if (!mr.ok()) die(mr.status().to_string());
    us.mr = *mr;
  }
  std::vector<double> out;
  for (size_t msg : sizes) {
    const Plan plan = plan_for(msg);
    // Latency: ping-pong, half the round trip.
    double t0 = 0;
    for (int i = -10; i < plan.lat_iters; ++i) {
      if (i == 0) t0 = bench::now_s();
      if (raw) {
        int pending = 0;
        if (server) {
          raw_post(rn, [&] { return fi_trecv(rn.ep, rn.buf, msg, rn.desc, rn.peer, 1, 0, &ctx[0]); }, pending);
          raw_wait(rn, 1);
          raw_post(rn, [&] { return fi_tsend(rn.ep, rn.buf, msg, rn.desc, rn.peer, 2, &ctx[1]); }, pending);
          raw_wait(rn, 1);
        } else {
          pending = 2;
          raw_post(rn, [&] { return fi_trecv(rn.ep, rn.buf, msg, rn.desc, rn.peer, 2, 0, &ctx[0]); }, pending);
          raw_post(rn, [&] { return fi_tsend(rn.ep, rn.buf, msg, rn.desc, rn.peer, 1, &ctx[1]); }, pending);
          raw_wait(rn, pending);
        }
      } else {
        if (server) {
          ours_ok(us.ep->recv(us.peer, 1, us.buf, msg, nullptr, us.mr));
          ours_wait(*us.ep, 1);
          ours_ok(us.ep->send(us.peer, 2, us.buf, msg, nullptr, us.mr));
          ours_wait(*us.ep, 1);
        } else {
          ours_ok(us.ep->recv(us.peer, 2, us.buf, msg, nullptr, us.mr));
          ours_ok(us.ep->send(us.peer, 1, us.buf, msg, nullptr, us.mr));
          ours_wait(*us.ep, 2);
        }
      }
    }
    const double lat_us = (bench::now_s() - t0) / plan.lat_iters / 2 * 1e6;
    // Bandwidth: the client streams windows of kWindow messages, the server acks each.
    for (int r = -1; r < plan.bw_rounds; ++r) {
      if (r == 0) t0 = bench::now_s();
      if (raw) {
        int pending = 0;
        if (server) {
          for (int w = 0; w < kWindow; ++w)
            raw_post(rn, [&] { return fi_trecv(rn.ep, rn.buf + w * msg, msg, rn.desc, rn.peer, 3, 0, &ctx[w]); },
                     pending);
          raw_wait(rn, kWindow);
          raw_post(rn, [&] { return fi_tsend(rn.ep, rn.buf, 8, rn.desc, rn.peer, 4, &ctx[0]); }, pending);
          raw_wait(rn, 1);
        } else {
          pending = kWindow + 1;
          raw_post(rn, [&] { return fi_trecv(rn.ep, rn.buf, 8, rn.desc, rn.peer, 4, 0, &ctx[0]); }, pending);
          for (int w = 0; w < kWindow; ++w)
            raw_post(rn, [&] { return fi_tsend(rn.ep, rn.buf + w * msg, msg, rn.desc, rn.peer, 3, &ctx[w + 1]); },
                     pending);
          raw_wait(rn, pending);
        }
      } else {
        if (server) {
          for (int w = 0; w < kWindow; ++w) ours_ok(us.ep->recv(us.peer, 3, us.buf + w * msg, msg, nullptr, us.mr));
          ours_wait(*us.ep, kWindow);
          ours_ok(us.ep->send(us.peer, 4, us.buf, 8, nullptr, us.mr));
          ours_wait(*us.ep, 1);
        } else {
          ours_ok(us.ep->recv(us.peer, 4, us.buf, 8, nullptr, us.mr));
          for (int w = 0; w < kWindow; ++w) ours_ok(us.ep->send(us.peer, 3, us.buf + w * msg, msg, nullptr, us.mr));
          ours_wait(*us.ep, kWindow + 1);
        }
      }
    }
    const double secs = bench::now_s() - t0;
    const double gbps = static_cast<double>(msg) * kWindow * plan.bw_rounds / secs / 1e9;
    out.push_back(lat_us);
    out.push_back(gbps);
  }
  if (raw) {
    raw_teardown(rn);
  } else {
    const auto k = us.ep->counters();
    if (k.registrations != 1) die("expected one registration, saw " + std::to_string(k.registrations));
    us.ep.reset();
    std::free(us.buf);
  }
  return out;
}

/// The first two CPUs this process may run on: server and client are pinned apart, the
/// same for raw and ours, so that neither run depends on where the scheduler put them.
std::vector<int> two_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

bool g_pin = true;

/// Forks a server and a client for one implementation; returns the client's numbers.
std::vector<double> run_pair(bool raw, const std::string& provider, const std::vector<size_t>& sizes) {
  const std::vector<int> cpus = two_cpus();
  int s2c[2], c2s[2], res[2];
  if (pipe(s2c) || pipe(c2s) || pipe(res)) die("pipe");
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pids[2];
  for (int role = 0; role < 2; ++role) {
    pids[role] = fork();
    if (pids[role] == 0) {
      alarm(120);
      const bool server = role == 0;
      if (g_pin && cpus.size() == 2) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus[static_cast<size_t>(role)], &set);
        sched_setaffinity(0, sizeof set, &set);
      }
      PairIo io{server ? s2c[1] : c2s[1], server ? c2s[0] : s2c[0]};
      std::vector<double> r = run_side(raw, server, provider, sizes, io);
      if (!server) {
        const ssize_t bytes = static_cast<ssize_t>(r.size() * sizeof(double));
        if (write(res[1], r.data(), static_cast<size_t>(bytes)) != bytes) _exit(4);
      }
      // Neither side leaves before both are done (the last ack may still be in flight).
      char c = 'x';
      if (write(io.wfd, &c, 1) != 1 || read(io.rfd, &c, 1) != 1) _exit(5);
      _exit(0);
    }
  }
  close(res[1]);
  std::vector<double> r(sizes.size() * 2, 0);
  const ssize_t want = static_cast<ssize_t>(r.size() * sizeof(double));
  ssize_t got = 0;
  while (got < want) {
    const ssize_t n = read(res[0], reinterpret_cast<char*>(r.data()) + got, static_cast<size_t>(want - got));
    if (n <= 0) break;
    got += n;
  }
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "bench_transport: a %s %s process failed\n", raw ? "raw" : "janus", provider.c_str());
      std::exit(1);
    }
  }
  for (int fd : {s2c[0], s2c[1], c2s[0], c2s[1], res[0]}) close(fd);
  if (got != want) die("short result");
  return r;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

std::string size_name(size_t b) {
  char buf[32];
  if (b >= (1u << 20)) std::snprintf(buf, sizeof buf, "%zu MiB", b >> 20);
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%zu KiB", b >> 10);
  else std::snprintf(buf, sizeof buf, "%zu B", b);
  return buf;
}

double load_average() {
  double l = 0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = 0;
    std::fclose(f);
  }
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  std::vector<std::string> providers = {"shm", "tcp"};
  std::vector<size_t> sizes = {4096, 64u << 10, 1u << 20, 16u << 20};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--providers" && i + 1 < argc) providers = split(argv[++i]);
    else if (a == "--no-pin") g_pin = false;
    else if (a == "--sizes" && i + 1 < argc) {
      sizes.clear();
      for (const std::string& s : split(argv[++i])) sizes.push_back(std::strtoull(s.c_str(), nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: bench_transport [--reps N] [--providers shm,tcp] [--sizes 4096,1048576] [--no-pin]\n");
      return 2;
    }
  }
  for (const std::string& p : providers)
    if (p != "shm" && p != "tcp") return std::fprintf(stderr, "bench_transport: provider %s (shm, tcp)\n", p.c_str()), 2;
  for (size_t s : sizes)
    if (s < 8) return std::fprintf(stderr, "bench_transport: sizes start at 8 bytes\n"), 2;

  const std::vector<int> cpus = two_cpus();
  std::printf("two processes (fork), busy polling%s; %ld cores, load average %.2f at start\n",
              g_pin && cpus.size() == 2 ? (", pinned to CPUs " + std::to_string(cpus[0]) + " and " + std::to_string(cpus[1])).c_str()
                                        : "",
              sysconf(_SC_NPROCESSORS_ONLN), load_average());
  std::printf("ours: janus transport (64-byte Cap'n Proto frame + payload, one posted scatter list, registration cache)\n");
  std::printf("raw:  libfabric RDM tagged ping-pong, the recipe of rdm_pingpong.cpp, same provider and sizes\n");
  std::printf("latency: half round trip; bandwidth: window of %d messages, one ack per window; median of %d runs\n\n",
              kWindow, reps);

  // [provider][impl][size] -> samples
  struct Samples {
    std::vector<std::vector<double>> lat, bw;
  };
  std::vector<Samples> ours(providers.size()), raws(providers.size());
  for (size_t p = 0; p < providers.size(); ++p) {
    ours[p].lat.assign(sizes.size(), {});
    ours[p].bw.assign(sizes.size(), {});
    raws[p] = ours[p];
  }
  ProgressBar bar("bench_transport", static_cast<int64_t>(providers.size()) * reps * 2, "runs");
  int64_t done = 0;
  for (int r = 0; r < reps; ++r) {
    for (size_t p = 0; p < providers.size(); ++p) {
      // Raw then ours, in fresh processes, every repetition: both see the same machine.
      for (int impl = 0; impl < 2; ++impl) {
        const bool raw = impl == 0;
        const std::vector<double> v = run_pair(raw, providers[p], sizes);
        Samples& s = raw ? raws[p] : ours[p];
        for (size_t i = 0; i < sizes.size(); ++i) {
          s.lat[i].push_back(v[2 * i]);
          s.bw[i].push_back(v[2 * i + 1]);
        }
        bar.update(++done);
      }
    }
  }
  bar.finish();

  std::printf("%9s %-12s %11s %11s %7s %11s %11s %8s\n", "size", "provider", "ours us", "raw us", "ratio", "ours GB/s",
              "raw GB/s", "% of raw");
  for (size_t i = 0; i < sizes.size(); ++i)
    for (size_t p = 0; p < providers.size(); ++p) {
      const double ol = bench::median(ours[p].lat[i]), rl = bench::median(raws[p].lat[i]);
      const double ob = bench::median(ours[p].bw[i]), rb = bench::median(raws[p].bw[i]);
      std::printf("%9s %-12s %11.2f %11.2f %6.2fx %11.3f %11.3f %7.1f%%\n", size_name(sizes[i]).c_str(),
                  providers[p] == "tcp" ? "tcp;ofi_rxm" : "shm", ol, rl, ol / rl, ob, rb, 100 * ob / rb);
    }
  std::printf("\nload average %.2f at the end (other work on this machine shows up as noise)\n", load_average());
  return 0;
}
