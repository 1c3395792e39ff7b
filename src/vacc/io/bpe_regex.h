// The regular expressions of tokenizer.json pre-tokenizers, run with PCRE2 (UTF + Unicode
// properties, JIT-compiled when the platform allows). Hugging Face runs them with Oniguruma,
// whose \s is narrower than PCRE2's (no U+180E), so \s and \S are rewritten to Oniguruma's
// set before compiling: U+0009..U+000D, U+0085 and the separators \p{Z}.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace vacc::bpe {

class Regex {
 public:
  // Compiles `pattern`; `literal` matches it as plain text. Throws vacc::Error (mentioning
  // `where`) when PCRE2 rejects the pattern.
  Regex(const std::string& pattern, bool literal, const std::string& where);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Calls on_match(begin, end) for each successive non-overlapping match in `subject` (valid
  // UTF-8), left to right. An empty match right after the previous match is skipped, and after
  // an empty match the search moves on one character (the Rust regex / onig iterator rules).
  void for_each_match(std::string_view subject,
                      const std::function<void(size_t, size_t)>& on_match) const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

// The pattern with \s and \S rewritten to Oniguruma's meaning (see above).
std::string oniguruma_compatible_pattern(const std::string& pattern);

}  // namespace vacc::bpe
