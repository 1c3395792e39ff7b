// ChatML, the chat format of Qwen2 / Qwen2.5: every message is rendered as
//   <|im_start|>{role}\n{content}<|im_end|>\n
// and, as the Qwen2.5 chat template does, a default system message is put first when the
// first message is not a system message (a system turn whose content is
// kQwenDefaultSystemMessage: "You are Qwen, created by Alibaba Cloud. You are a helpful
// assistant.").
// The generation prompt, which asks the model for the next assistant turn, is
//   <|im_start|>assistant\n
// Roles are written as given (system, user, assistant, ...); tool calls and tool
// responses get no special rendering.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace vacc {

inline constexpr std::string_view kQwenDefaultSystemMessage =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
inline constexpr std::string_view kChatGenerationPrompt = "<|im_start|>assistant\n";

struct ChatMessage {
  std::string role;
  std::string content;
};

// A piece of rendered ChatML. `assistant` marks the text a model is trained to produce when
// the loss is taken on assistant turns only: the content of an assistant message and the
// <|im_end|> that closes it (not the "<|im_start|>assistant\n" header, nor the "\n" after
// <|im_end|>) -- the same split as TRL's assistant-only loss with Qwen's template.
struct ChatSegment {
  std::string text;
  bool assistant = false;
};

// The conversation as ChatML. `default_system` is put first when the first message is not a
// system message (empty: nothing is added). With `add_generation_prompt` the text ends with
// "<|im_start|>assistant\n".
std::string render_chatml(const std::vector<ChatMessage>& messages,
                          std::string_view default_system = kQwenDefaultSystemMessage,
                          bool add_generation_prompt = false);

// The same text cut into alternating non-assistant / assistant segments; concatenating the
// segments' text gives render_chatml(...) exactly. Empty segments are left out.
std::vector<ChatSegment> render_chatml_segments(
    const std::vector<ChatMessage>& messages,
    std::string_view default_system = kQwenDefaultSystemMessage,
    bool add_generation_prompt = false);

}  // namespace vacc
