// Placeholder until the BPE tokenizer lands.
#include "vacc/io/tokenizer.h"

#include "vacc/core/error.h"

namespace vacc {

struct Tokenizer::Impl {};
Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer Tokenizer::load(const std::string& dir) { fail("tokenizer not available yet: ", dir); }
std::vector<int32_t> Tokenizer::encode(std::string_view) const { fail("tokenizer not available"); }
std::string Tokenizer::decode(const std::vector<int32_t>&, bool) const { fail("tokenizer not available"); }
int64_t Tokenizer::vocab_size() const { return 0; }
std::optional<int32_t> Tokenizer::token_id(std::string_view) const { return std::nullopt; }
std::optional<int32_t> Tokenizer::eos_id() const { return std::nullopt; }
std::string Tokenizer::id_to_piece(int32_t) const { return {}; }

}  // namespace vacc
