#include "vacc/io/chat_template.h"

namespace vacc {

namespace {

// Appends text to the last segment when it has the same kind, else starts a new one.
void append(std::vector<ChatSegment>& out, std::string_view text, bool assistant) {
  if (text.empty()) return;
  if (!out.empty() && out.back().assistant == assistant) {
    out.back().text.append(text);
  } else {
    out.push_back({std::string(text), assistant});
  }
}

}  // namespace

std::vector<ChatSegment> render_chatml_segments(const std::vector<ChatMessage>& messages,
                                                std::string_view default_system,
                                                bool add_generation_prompt) {
  std::vector<ChatSegment> out;
  if ((messages.empty() || messages.front().role != "system") && !default_system.empty()) {
    append(out, "<|im_start|>system\n", false);
    append(out, default_system, false);
    append(out, "<|im_end|>\n", false);
  }
  for (const ChatMessage& m : messages) {
    const bool assistant = m.role == "assistant";
    append(out, "<|im_start|>", false);
    append(out, m.role, false);
    append(out, "\n", false);
    append(out, m.content, assistant);
    append(out, "<|im_end|>", assistant);
    append(out, "\n", false);
  }
  if (add_generation_prompt) append(out, kChatGenerationPrompt, false);
  return out;
}

std::string render_chatml(const std::vector<ChatMessage>& messages, std::string_view default_system,
                          bool add_generation_prompt) {
  std::string text;
  for (const ChatSegment& s :
       render_chatml_segments(messages, default_system, add_generation_prompt))
    text += s.text;
  return text;
}

}  // namespace vacc
