#include "gateway/openai/choice_decoder.h"

#include <utility>

namespace tern::gateway {

ChoiceDecoder::ChoiceDecoder(const OpenAiRequest& request, const Tokenizer& tokenizer,
                             int32_t max_tokens)
    : logprobs_(request.sampling.logprobs),
      max_tokens_(max_tokens),
      detokenizer_(tokenizer, request.skip_special_tokens),
      stop_matcher_(request.stop, request.include_stop_str_in_output) {}

absl::StatusOr<ChoiceDecoder::Output> ChoiceDecoder::Push(
    const tern::v1::GenerateResponse& response) {
  const int n = response.token_ids_size();
  received_tokens_ += n;
  if (logprobs_ && response.logprobs_size() != n) {
    return absl::InternalError("The worker did not send the logprobs of every token.");
  }
  std::string text;
  for (int i = 0; i < n; ++i) {
    const std::string piece = detokenizer_.Append(response.token_ids(i));
    if (logprobs_) {
      logprob_tracker_.Add(response.logprobs(i), piece.size(), detokenizer_.pending_bytes() > 0);
    }
    text += piece;
  }
  const tern::v1::FinishReason finish = response.finish_reason();
  const bool finished =
      finish == tern::v1::FINISH_REASON_STOP || finish == tern::v1::FINISH_REASON_LENGTH;
  if (response.has_usage()) {
    cached_tokens_ = response.usage().cached_prompt_tokens();
    reported_tokens_ = response.usage().completion_tokens();
  }
  if (finished) {
    const std::string tail = detokenizer_.Flush();
    logprob_tracker_.ExtendLast(tail.size());
    text += tail;
  }
  Output out = Release(std::move(text), finished);
  if (stop_matcher_.stopped()) {
    out.stopped_by_string = true;
    finish_reason_ = out.finish_reason = "stop";
    return out;
  }
  switch (finish) {
    case tern::v1::FINISH_REASON_STOP:
      finish_reason_ = out.finish_reason = "stop";
      break;
    case tern::v1::FINISH_REASON_LENGTH:
      finish_reason_ = out.finish_reason = "length";
      break;
    case tern::v1::FINISH_REASON_CANCELLED:
      return absl::UnavailableError("The generation was cancelled by the server.");
    case tern::v1::FINISH_REASON_ERROR:
      worker_error_ = true;  // the RPC's status says why
      break;
    default:
      break;
  }
  return out;
}

ChoiceDecoder::Output ChoiceDecoder::End() {
  const std::string tail = detokenizer_.Flush();
  logprob_tracker_.ExtendLast(tail.size());
  Output out = Release(tail, /*finished=*/true);
  finish_reason_ = out.finish_reason =
      stop_matcher_.stopped() || received_tokens_ < max_tokens_ ? "stop" : "length";
  return out;
}

ChoiceDecoder::Output ChoiceDecoder::Release(std::string text, bool finished) {
  Output out;
  out.text = stop_matcher_.Push(text);
  if (finished && !stop_matcher_.stopped()) out.text += stop_matcher_.Flush();
  if (logprobs_) {
    out.logprobs = logprob_tracker_.Release(out.text);
    if (finished || stop_matcher_.stopped()) {
      for (TokenLogprobEntry& entry : logprob_tracker_.Finish(stop_matcher_.stopped())) {
        out.logprobs.push_back(std::move(entry));
      }
    }
  }
  return out;
}

}  // namespace tern::gateway
