// One line of a supervised fine-tuning data set (a JSON object) -> token ids and labels.
//
// Formats, recognised by their keys (SftFormat::kAuto, checked in this order) or forced:
//   tokens  {"input_ids": [int...], "labels": [int...]?}   pre-tokenized; no tokenizer needed.
//           labels, when given, are Hugging Face style: as long as input_ids, unshifted
//           (labels[t] is the target *at* token t, normally input_ids[t]), -100 = no loss.
//   chat    {"messages": [{"role": str, "content": str}, ...]}   rendered with ChatML
//           (chat_template.h, Qwen2.5's default system message unless set otherwise); no
//           eos is added: every turn already ends with <|im_end|>.
//   alpaca  {"instruction": str, "input": str?, "output": str}   the Stanford Alpaca prompt
//           (alpaca_prompt below) followed by output and the eos token.
//   text    {"text": str}   the text followed by the eos token.
// Other keys are ignored.
//
// Masking (mask_prompt): when false every token is learnt (labels = ids, as the fine-tuning
// script of the tutorials does); when true only the response is: alpaca's output + eos, the
// assistant turns of a chat (content + <|im_end|>), all of a text. With masking the pieces are
// tokenized separately (prompt, then response), so the prompt/response boundary falls exactly
// between tokens; without it the whole text is tokenized at once, exactly as
// tokenizer(prompt + output) would.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/io/chat_template.h"
#include "vacc/io/token_batch.h"

namespace vacc {

class Tokenizer;

enum class SftFormat { kAuto, kAlpaca, kChat, kText, kTokens };

// "auto", "alpaca", "chat", "text", "tokens".
std::string_view sft_format_name(SftFormat format);
// The format of a name above; throws vacc::Error listing the names otherwise.
SftFormat parse_sft_format(std::string_view name);

// The Stanford Alpaca prompt. With a non-empty input:
//   "Below is an instruction that describes a task, paired with an input that provides further
//   context. Write a response that appropriately completes the request.\n\n"
//   "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
// and with an empty one:
//   "Below is an instruction that describes a task. Write a response that appropriately
//   completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
// The response (the output, then eos) follows directly after "### Response:\n".
std::string alpaca_prompt(std::string_view instruction, std::string_view input);

struct SftExampleOptions {
  SftFormat format = SftFormat::kAuto;  // kAuto: detected per line by its keys
  bool mask_prompt = false;             // true: only response tokens are learnt (see above)
  // Put first in a chat whose first message is not a system message; empty: none.
  std::string default_system_message = std::string(kQwenDefaultSystemMessage);
  // Appended after alpaca and text examples; they are an error without one.
  std::optional<int32_t> eos_id;
  // Token ids (and labels other than -100) must be below this; 0: only checked >= 0.
  int64_t vocab_size = 0;
};

struct SftExample {
  SftFormat format = SftFormat::kAuto;  // the format the line had
  std::vector<int32_t> ids;
  // Hugging Face style, unshifted, as long as ids: labels[t] is the target at token t
  // (ids[t] when learnt, kIgnoreLabel when not). Data loaders shift them.
  std::vector<int32_t> labels;
};

// Bad content in a line (not JSON, a missing key, a wrong type, an id outside the
// vocabulary): the message says what is wrong but not where; callers add the file and line.
class BadLineError : public Error {
 public:
  using Error::Error;
};

// Parses and tokenizes one line. Throws BadLineError for bad content, and vacc::Error for
// what no line can fix: a text format without a tokenizer, alpaca or text without an eos id.
SftExample parse_sft_example(std::string_view line, const Tokenizer* tokenizer,
                             const SftExampleOptions& options);

}  // namespace vacc
