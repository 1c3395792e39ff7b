// Tokenizer throughput, one thread: MB of UTF-8 text encoded per second with the Qwen
// tokenizer, on a few MB of generated mixed text (English prose, code, CJK, Korean, emoji,
// accented text, numbers, ChatML turns) cut into ~4 KB documents. The first pass starts with an
// empty pre-token cache; the second finds it warm. Built into build/bin:
//   build/bin/tokenizer_bench [--tokenizer DIR] [--mb N]
// (DIR defaults to ${VACC_HOME:-$HOME/.vacc}/cache/tokenizers/qwen, from scripts/setup.sh.)
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/io/tokenizer.h"

namespace {

const char* kWords[] = {"the",
                        "of",
                        "and",
                        "to",
                        "in",
                        "is",
                        "that",
                        "for",
                        "it",
                        "as",
                        "was",
                        "with",
                        "be",
                        "by",
                        "on",
                        "not",
                        "he",
                        "this",
                        "are",
                        "or",
                        "his",
                        "from",
                        "at",
                        "which",
                        "but",
                        "have",
                        "an",
                        "had",
                        "they",
                        "you",
                        "were",
                        "their",
                        "one",
                        "all",
                        "we",
                        "can",
                        "her",
                        "has",
                        "there",
                        "been",
                        "if",
                        "more",
                        "when",
                        "will",
                        "would",
                        "who",
                        "so",
                        "no",
                        "model",
                        "training",
                        "gradient",
                        "tokenizer",
                        "accelerator",
                        "parallel",
                        "pipeline",
                        "memory",
                        "throughput",
                        "language",
                        "network",
                        "optimizer",
                        "learning",
                        "dataset",
                        "sequence",
                        "attention",
                        "transformer",
                        "embedding",
                        "checkpoint",
                        "benchmark",
                        "performance",
                        "distributed",
                        "computation",
                        "everything",
                        "understand",
                        "information",
                        "government",
                        "development",
                        "international",
                        "environment",
                        "significant",
                        "particularly",
                        "communication"};
const char* kCode[] = {"def ",
                       "return ",
                       "if ",
                       "for ",
                       "while ",
                       "class ",
                       "import ",
                       "const ",
                       "auto ",
                       "int ",
                       "std::vector<float> ",
                       "self.",
                       "->",
                       "::",
                       " = ",
                       " == ",
                       " += ",
                       "(",
                       ")",
                       "[",
                       "]",
                       "{",
                       "}",
                       ";",
                       ", ",
                       "\"",
                       "'",
                       "#",
                       "//",
                       "0",
                       "1",
                       "nullptr",
                       "True",
                       "None",
                       "    ",
                       "\t",
                       "\n"};

void append_utf8(std::string& s, char32_t c) {
  if (c < 0x80) {
    s += char(c);
  } else if (c < 0x800) {
    s += char(0xC0 | (c >> 6));
    s += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += char(0xE0 | (c >> 12));
    s += char(0x80 | ((c >> 6) & 0x3F));
    s += char(0x80 | (c & 0x3F));
  } else {
    s += char(0xF0 | (c >> 18));
    s += char(0x80 | ((c >> 12) & 0x3F));
    s += char(0x80 | ((c >> 6) & 0x3F));
    s += char(0x80 | (c & 0x3F));
  }
}

// A made-up identifier or word from random syllables (many distinct pre-tokens, so the BPE
// merge loop runs, not only the cache).
std::string made_up(std::mt19937_64& rng) {
  static const char* syllables[] = {"ka",  "ro", "mi", "ten", "sor", "vel", "qua", "xi", "brin",
                                    "dor", "ph", "ul", "est", "ion", "ar",  "ze",  "lu", "ment"};
  std::string s;
  const int n = 1 + int(rng() % 4);
  for (int i = 0; i < n; ++i) s += syllables[rng() % std::size(syllables)];
  return s;
}

std::string document(std::mt19937_64& rng, size_t bytes) {
  std::string d;
  while (d.size() < bytes) {
    const unsigned kind = unsigned(rng() % 100);
    if (kind < 45) {  // English prose
      for (int w = 0; w < 12; ++w) {
        std::string word = rng() % 10 == 0 ? made_up(rng) : kWords[rng() % std::size(kWords)];
        if (w == 0 || rng() % 15 == 0) word[0] = char(std::toupper(word[0]));
        d += word;
        d += rng() % 12 == 0 ? ", " : " ";
      }
      if (rng() % 4 == 0) d += std::to_string(rng() % 100000) + " ";
      d += rng() % 3 == 0 ? ".\n" : ". ";
    } else if (kind < 70) {  // code
      for (int t = 0; t < 16; ++t) {
        d += rng() % 3 == 0 ? made_up(rng) : kCode[rng() % std::size(kCode)];
      }
      d += "\n";
    } else if (kind < 82) {  // Chinese / Japanese
      for (int c = 0; c < 30; ++c) append_utf8(d, char32_t(0x4E00 + rng() % 3000));
      d += "\xE3\x80\x82";   // 。
    } else if (kind < 88) {  // Korean
      for (int w = 0; w < 6; ++w) {
        for (int c = 0; c < 3; ++c) append_utf8(d, char32_t(0xAC00 + rng() % 11172));
        d += ' ';
      }
      d += ".\n";
    } else if (kind < 93) {  // accented Latin, emoji
      d += "Caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9 ";
      for (int e = 0; e < 3; ++e) append_utf8(d, char32_t(0x1F600 + rng() % 80));
      d += " \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 ";
    } else if (kind < 97) {  // numbers and punctuation
      d += std::to_string(rng() % 1000000) + "." + std::to_string(rng() % 1000) + " --- (" +
           std::to_string(rng() % 100) + "%) ==> ";
    } else {  // ChatML
      d += "<|im_start|>user\n" + made_up(rng) + " " + kWords[rng() % std::size(kWords)] +
           "?<|im_end|>\n<|im_start|>assistant\n";
    }
  }
  return d;
}

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  const char* home = std::getenv("VACC_HOME");
  std::string dir = home ? std::string(home) + "/cache/tokenizers/qwen"
                         : std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") +
                               "/.vacc/cache/tokenizers/qwen";
  double megabytes = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--tokenizer") == 0)
      dir = argv[i + 1];
    else if (std::strcmp(argv[i], "--mb") == 0)
      megabytes = std::atof(argv[i + 1]);
  }
  try {
    auto t0 = std::chrono::steady_clock::now();
    const vacc::Tokenizer tokenizer = vacc::Tokenizer::load(dir);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::mt19937_64 rng(2024);
    std::vector<std::string> docs;
    size_t total = 0;
    while (double(total) < megabytes * 1e6) {
      docs.push_back(document(rng, 2000 + rng() % 4000));
      total += docs.back().size();
    }
    std::printf("tokenizer %s loaded in %.2f s; %zu documents, %.2f MB of text\n", dir.c_str(),
                load_s, docs.size(), double(total) / 1e6);

    for (const char* pass : {"cold cache", "warm cache"}) {
      size_t tokens = 0;
      const double c0 = thread_seconds();
      const auto w0 = std::chrono::steady_clock::now();
      for (const std::string& d : docs) tokens += tokenizer.encode(d).size();
      const double cpu = thread_seconds() - c0;
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
      std::printf(
          "encode (%s): %.2f MB/s per core (CPU time; %.2f MB/s wall), %.2f M tokens/s, "
          "%.2f bytes/token\n",
          pass, double(total) / 1e6 / cpu, double(total) / 1e6 / wall, double(tokens) / 1e6 / cpu,
          double(total) / double(tokens));
    }
    std::vector<std::vector<int32_t>> ids;
    ids.reserve(docs.size());
    for (const std::string& d : docs) ids.push_back(tokenizer.encode(d));
    const double c0 = thread_seconds();
    size_t out = 0;
    for (const auto& v : ids) out += tokenizer.decode(v).size();
    const double cpu = thread_seconds() - c0;
    std::printf("decode: %.2f MB/s per core\n", double(out) / 1e6 / cpu);
  } catch (const vacc::Error& e) {
    std::fprintf(stderr, "tokenizer_bench: %s (run scripts/setup.sh to fetch the tokenizer)\n",
                 e.what());
    return 1;
  }
  return 0;
}
