// bench_tokenizer: single-thread encode throughput of janus::text::Tokenizer beside Hugging
// Face `tokenizers` (the Rust crate behind transformers' fast tokenizers, what a Python
// server would use), measured in the same run on the same text, with the ids compared.
//
//   build/bench/bench_tokenizer [--text FILE] [--mb N] [--reps N] [--lines] [--python PY] [TOKENIZER_DIR...]
//
// Without --text the corpus is built here: the fixtures' multilingual strings (CJK, emoji,
// Cyrillic, Arabic, code, random Unicode) and this repository's sources and docs, repeated
// to --mb megabytes (default 4). Default tokenizers: the fixtures mixtral (real 32k
// SentencePiece-BPE vocabulary), qwen_small and dsv3_small (byte-level, Split regexes).
// The peer runs as `PY -c ...` (PY: --python, else $JANUS_BENCH_PYTHON, else python3) with
// TOKENIZERS_PARALLELISM=false and one Tokenizer.encode call on the whole text, as Janus
// does (--lines: one call per line on both sides, closer to requests of a server; the
// peer's per-call Python overhead then counts against it); both take the best of --reps runs after a warm-up (word caches warm on both sides).
// It prints tables and never asserts on time.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "runtime/text/tokenizer.h"

using namespace janus;
namespace fs = std::filesystem;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string build_corpus(const std::string& src, size_t bytes) {
  std::string seed;
  for (const char* name : {"mixtral", "qwen_small", "dsv3_small"}) {
    const std::string path = src + "/tests/fixtures/tokenizers/" + name + "/cases.json";
    auto j = nlohmann::json::parse(read_all(path), nullptr, false);
    if (j.is_discarded()) continue;
    for (const auto& c : j["cases"]) {
      seed += c["text"].get<std::string>();
      seed += '\n';
    }
  }
  std::vector<std::string> files;
  for (const char* dir : {"runtime", "docs", "actors", "examples"}) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(src + "/" + dir, ec); it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      const auto ext = it->path().extension().string();
      if (it->is_regular_file() && (ext == ".cc" || ext == ".h" || ext == ".md" || ext == ".lua"))
        files.push_back(it->path().string());
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) seed += read_all(f);
  seed += read_all(src + "/README.md");
  std::string out;
  out.reserve(bytes + seed.size());
  while (out.size() < bytes) out += seed;
  // Cut on a line end so the text stays valid UTF-8.
  size_t cut = out.find('\n', bytes);
  if (cut != std::string::npos) out.resize(cut + 1);
  return out;
}

// The peer: prints "seconds n_ids" and writes the ids as int32 to ids_path.
const char* kPeer = R"PY(
import sys, time, array
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding='utf-8', newline='').read()
reps = int(sys.argv[4])
lines = text.splitlines(keepends=True) if sys.argv[5] == 'lines' else None
def run():
    if lines is None:
        return tok.encode(text, add_special_tokens=False).ids
    out = []
    for l in lines:
        out += tok.encode(l, add_special_tokens=False).ids
    return out
ids = run()
best = 1e9
for _ in range(reps):
    t0 = time.perf_counter()
    ids = run()
    best = min(best, time.perf_counter() - t0)
array.array('i', ids).tofile(open(sys.argv[3], 'wb'))
print(best, len(ids))
)PY";

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

}  // namespace

int main(int argc, char** argv) {
  std::string text_path, python;
  double mb = 4;
  int reps = 3;
  bool by_lines = false;
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--text" && i + 1 < argc) text_path = argv[++i];
    else if (a == "--mb" && i + 1 < argc) mb = std::atof(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--python" && i + 1 < argc) python = argv[++i];
    else if (a == "--lines") by_lines = true;
    else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "usage: %s [--text FILE] [--mb N] [--reps N] [--lines] [--python PY] [TOKENIZER_DIR...]\n", argv[0]);
      return 2;
    } else dirs.push_back(a);
  }
  if (python.empty()) {
    const char* e = std::getenv("JANUS_BENCH_PYTHON");
    python = e && *e ? e : "python3";
  }
  const std::string src = bench::source_dir();
  if (dirs.empty())
    for (const char* n : {"mixtral", "qwen_small", "dsv3_small"}) dirs.push_back(src + "/tests/fixtures/tokenizers/" + n);

  std::string text;
  const fs::path tmp = fs::temp_directory_path() / ("bench_tokenizer_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  if (text_path.empty()) {
    text = build_corpus(src, static_cast<size_t>(mb * 1e6));
    text_path = (tmp / "corpus.txt").string();
    std::ofstream(text_path, std::ios::binary) << text;
  } else {
    text = read_all(text_path);
  }
  const double text_mb = static_cast<double>(text.size()) / 1e6;
  std::vector<std::string> lines;  // as Python's str.splitlines(keepends=True) cuts them
  if (by_lines) {
    size_t start = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      size_t end = 0;
      if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) end = i + 1;
      else if (c == '\r') end = (i + 1 < text.size() && text[i + 1] == '\n') ? i + 2 : i + 1;
      else if (c == 0xC2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0x85) end = i + 2;
      else if (c == 0xE2 && i + 2 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(text[i + 2]) == 0xA8 || static_cast<unsigned char>(text[i + 2]) == 0xA9))
        end = i + 3;
      if (end) {
        lines.push_back(text.substr(start, end - start));
        start = end;
        i = end - 1;
      }
    }
    if (start < text.size()) lines.push_back(text.substr(start));
  }
  std::printf("bench_tokenizer: encode %.2f MB of text (%s), single thread, best of %d, %s\n", text_mb,
              text_path.c_str(), reps, by_lines ? "one encode() per line" : "one encode() on the whole text");
  std::printf("peer: Hugging Face tokenizers (Rust) via %s, TOKENIZERS_PARALLELISM=false, the same calls\n\n",
              python.c_str());
  std::printf("%-12s %10s %11s %11s %11s %11s %8s %6s\n", "tokenizer", "tokens", "janus MB/s", "janus Mtok/s",
              "HF MB/s", "HF Mtok/s", "ratio", "ids");

  int failures = 0;
  for (const auto& dir : dirs) {
    const std::string name = fs::path(dir).filename().string();
    auto tok = text::Tokenizer::load(dir);
    if (!tok.ok()) {
      std::printf("%-12s %s\n", name.c_str(), tok.status().to_string().c_str());
      ++failures;
      continue;
    }
    auto run = [&](std::vector<int32_t>& out) -> Status {
      out.clear();
      if (!by_lines) {
        JANUS_ASSIGN_OR_RETURN(out, (*tok)->encode(text, false));
        return Status::Ok();
      }
      for (const auto& l : lines) {
        JANUS_ASSIGN_OR_RETURN(auto part, (*tok)->encode(l, false));
        out.insert(out.end(), part.begin(), part.end());
      }
      return Status::Ok();
    };
    std::vector<int32_t> ids;
    if (Status st = run(ids); !st.ok()) {
      std::printf("%-12s %s\n", name.c_str(), st.to_string().c_str());
      ++failures;
      continue;
    }
    double best = 1e9;
    for (int r = 0; r < reps; ++r) {
      const double t0 = bench::now_s();
      (void)run(ids);
      best = std::min(best, bench::now_s() - t0);
    }
    const std::string ids_path = (tmp / (name + ".ids")).string();
    const std::string cmd = "TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 " + shell_quote(python) + " -c " +
                            shell_quote(kPeer) + " " + shell_quote(dir + "/tokenizer.json") + " " +
                            shell_quote(text_path) + " " + shell_quote(ids_path) + " " + std::to_string(reps) +
                            (by_lines ? " lines" : " whole");
    FILE* p = popen(cmd.c_str(), "r");
    double hf_s = 0;
    long hf_n = -1;
    if (p) {
      if (std::fscanf(p, "%lf %ld", &hf_s, &hf_n) != 2) hf_n = -1;
      pclose(p);
    }
    const double mbs = text_mb / best, mtoks = static_cast<double>(ids.size()) / best / 1e6;
    if (hf_n < 0) {
      std::printf("%-12s %10zu %11.2f %11.3f %11s %11s %8s %6s\n", name.c_str(), ids.size(), mbs, mtoks, "n/a",
                  "n/a", "n/a", "?");
      continue;
    }
    const std::string raw = read_all(ids_path);
    std::vector<int32_t> hf_ids(raw.size() / sizeof(int32_t));
    std::memcpy(hf_ids.data(), raw.data(), hf_ids.size() * sizeof(int32_t));
    const bool same = hf_ids == ids;
    if (!same) ++failures;
    std::printf("%-12s %10zu %11.2f %11.3f %11.2f %11.3f %7.2fx %6s\n", name.c_str(), ids.size(), mbs, mtoks,
                text_mb / hf_s, static_cast<double>(hf_n) / hf_s / 1e6, hf_s / best, same ? "same" : "DIFFER");
  }
  std::error_code ec;
  fs::remove_all(tmp, ec);
  std::printf("\nratio: HF time / Janus time (above 1: Janus is faster). ids: Janus's equal HF's, id for id.\n");
  return failures ? 1 : 0;
}
