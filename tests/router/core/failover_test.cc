// Failover decisions: what ends a call, what resumes it elsewhere, before
// and after the first token.
#include "router/core/failover.h"

#include <gtest/gtest.h>

namespace tern::router {
namespace {

using Action = FailoverDecision::Action;
using End = AttemptOutcome::End;

AttemptOutcome Outcome(End end, size_t streamed, int retries = 0) {
  AttemptOutcome outcome;
  outcome.end = end;
  outcome.streamed = streamed;
  outcome.max_tokens = 16;
  outcome.retries = retries;
  return outcome;
}

TEST(FailoverTest, SuccessAndTheRequestsOwnErrorsFinish) {
  const RelayOptions options;
  EXPECT_EQ(DecideFailover(options, Outcome(End::kOk, 16), 1.0).action, Action::kFinish);
  const FailoverDecision bad = DecideFailover(options, Outcome(End::kOther, 0), 1.0);
  EXPECT_EQ(bad.action, Action::kFinish);
  EXPECT_FALSE(bad.worker_fault);
}

TEST(FailoverTest, WorkerFailureBeforeTheFirstTokenRetries) {
  const RelayOptions options{
      .max_retries = 3, .backoff = absl::Milliseconds(100), .backoff_multiplier = 2.0};
  const FailoverDecision d = DecideFailover(options, Outcome(End::kWorkerFailure, 0), 1.0);
  EXPECT_EQ(d.action, Action::kRetry);
  EXPECT_EQ(d.delay, absl::Milliseconds(100));
  EXPECT_TRUE(d.worker_fault);
}

TEST(FailoverTest, WorkerFailureAfterTheFirstTokenResumes) {
  const RelayOptions options{
      .max_retries = 3, .backoff = absl::Milliseconds(100), .backoff_multiplier = 2.0};
  const FailoverDecision d = DecideFailover(options, Outcome(End::kWorkerFailure, 5, 2), 1.2);
  EXPECT_EQ(d.action, Action::kRetry);
  EXPECT_EQ(d.delay, absl::Milliseconds(480)) << "100 ms * 2^2 * 1.2";
}

TEST(FailoverTest, AFullWorkerIsRetriedOnlyBeforeTheFirstToken) {
  const RelayOptions options;
  EXPECT_EQ(DecideFailover(options, Outcome(End::kResourceExhausted, 0), 1.0).action,
            Action::kRetry);
  const FailoverDecision after = DecideFailover(options, Outcome(End::kResourceExhausted, 3), 1.0);
  EXPECT_EQ(after.action, Action::kFinish);
  EXPECT_FALSE(after.worker_fault);
}

TEST(FailoverTest, ACallAbortedBecauseItsWorkerWasLostResumesWithoutCountingTwice) {
  AttemptOutcome outcome = Outcome(End::kCancelled, 4);
  outcome.worker_lost = true;
  const FailoverDecision d = DecideFailover(RelayOptions{}, outcome, 1.0);
  EXPECT_EQ(d.action, Action::kRetry);
  EXPECT_FALSE(d.worker_fault) << "the lost worker's health already counted it";
}

TEST(FailoverTest, ACancelledClientFinishesWhateverTheWorkerSaid) {
  AttemptOutcome outcome = Outcome(End::kCancelled, 4);
  outcome.client_gone = true;
  const FailoverDecision d = DecideFailover(RelayOptions{}, outcome, 1.0);
  EXPECT_EQ(d.action, Action::kFinish);
  EXPECT_FALSE(d.worker_fault);
}

TEST(FailoverTest, TheRetryBudgetIsBounded) {
  const RelayOptions options{.max_retries = 2};
  EXPECT_EQ(DecideFailover(options, Outcome(End::kWorkerFailure, 1, 1), 1.0).action,
            Action::kRetry);
  EXPECT_EQ(DecideFailover(options, Outcome(End::kWorkerFailure, 1, 2), 1.0).action,
            Action::kGiveUp);
}

TEST(FailoverTest, EveryTokenStreamedCompletesWithLength) {
  EXPECT_EQ(DecideFailover(RelayOptions{}, Outcome(End::kWorkerFailure, 16), 1.0).action,
            Action::kCompleteLength);
}

}  // namespace
}  // namespace tern::router
