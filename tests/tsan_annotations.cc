// ThreadSanitizer annotations for Debian's abseil and gRPC, preloaded
// (LD_PRELOAD) into the TSan test runs by scripts/sanitize.sh; not part of
// any build.
//
// abseil: Debian's libabsl_synchronization.so is not built with TSan, so the
// lock-free fast paths and futex waits of absl::Mutex, CondVar and
// Notification are invisible to it, and every access that our code guards
// with an absl::Mutex would be reported as a race. abseil has the annotations
// (ABSL_TSAN_MUTEX_* in mutex.cc) but compiles them only into TSan builds of
// itself. This library interposes the exported functions (ours and gRPC's
// calls reach them through the PLT), forwards each to the real one found
// with dlsym(RTLD_NEXT) and adds the same __tsan_mutex_* annotations around
// it, so TSan sees absl locks as it sees pthread mutexes. Waiting conditions
// evaluated inside the real calls fall between a pre_ and a post_
// annotation, where TSan ignores memory accesses, as abseil's own
// annotations arrange.
//
// gRPC: a batch of operations handed to gRPC core (grpc_call_start_batch)
// completes on another thread, ordered by core's own uninstrumented queues.
// The C++ API brackets every batch: its completion (CallOpSet::
// FinalizeResult) drops the batch's reference on the call with
// grpc_call_unref before running the reaction. A release on the call at
// start_batch and an acquire at unref tell TSan that what a thread did
// before starting a batch happened before the batch's reaction, e.g. that a
// reactor built before its first StartWrite is visible in OnWriteDone.
// Reactions that gRPC hands to its executor threads (OnDone, OnCancel) get
// the same treatment: a release on the closure when it is queued
// (grpc_core::Executor::Run) and an acquire when an executor thread takes it
// (Executor::RunClosures).
//
// A received message is deserialized into the caller's response object
// (CallOpRecvMessage::FinishOp) before that unref, on whichever thread
// completes the batch, so the call's acquire comes too late for it: TSan
// would see the object's construction (or its previous reads) and the
// parse as a race. Every batch that receives a message also releases one
// shared object, which the start of each parse (grpc_byte_buffer_reader_init,
// called through gRPC's C API) acquires: what a thread did before starting
// a receive happened before every parse that begins after it. This orders
// more than gRPC does (parses after unrelated batches too), so a race on a
// response object is reported only when our access follows the last receive
// its thread started; nothing else is ordered by it.
//
// The __tsan_* functions come from the TSan runtime of the program; they are
// weak here so that a program without TSan that inherits LD_PRELOAD still
// runs (without annotations).
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpc/impl/codegen/grpc_types.h"

extern "C" {
void __tsan_acquire(void* addr) __attribute__((weak));
void __tsan_release(void* addr) __attribute__((weak));
void __tsan_mutex_destroy(void* addr, unsigned flags) __attribute__((weak));
void __tsan_mutex_pre_lock(void* addr, unsigned flags) __attribute__((weak));
void __tsan_mutex_post_lock(void* addr, unsigned flags, int recursion) __attribute__((weak));
int __tsan_mutex_pre_unlock(void* addr, unsigned flags) __attribute__((weak));
void __tsan_mutex_post_unlock(void* addr, unsigned flags) __attribute__((weak));
}

namespace {

// Flags of sanitizer/tsan_interface.h.
constexpr unsigned kNotStatic = 1 << 8;
constexpr unsigned kReadLock = 1 << 3;
constexpr unsigned kTryLock = 1 << 4;
constexpr unsigned kTryLockFailed = 1 << 5;

// How deep this thread is in interposed calls. abseil's functions call each
// other through the PLT too (AwaitWithTimeout calls AwaitWithDeadline,
// Notify calls Lock, ...); only the outermost call is annotated.
thread_local int t_depth = 0;

// The object every message-receiving batch releases and every parse acquires.
char g_message_receives;

bool Annotating() { return __tsan_mutex_pre_lock != nullptr && t_depth == 1; }

// Marks one interposed call for its duration.
class Interposed {
 public:
  Interposed() { ++t_depth; }
  ~Interposed() { --t_depth; }
  Interposed(const Interposed&) = delete;
  Interposed& operator=(const Interposed&) = delete;
};

void PreLock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_pre_lock(mu, flags);
}
void PostLock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_post_lock(mu, flags, 0);
}
void PreUnlock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_pre_unlock(mu, flags);
}
void PostUnlock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_post_unlock(mu, flags);
}

#define TERN_STRINGIFY_INNER(x) #x
#define TERN_STRINGIFY(x) TERN_STRINGIFY_INNER(x)

// The next definition of `name` (the library's own); aborts if there is none.
template <typename Fn>
Fn Next(const std::string& name) {
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_annotations: %s not found\n", name.c_str());
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

// The real definition of an absl function, by its mangled name without the
// leading "_ZN" / "_ZNK" + "4absl" + inline namespace.
template <typename Fn>
Fn Real(bool is_const, const char* rest) {
#if ABSL_OPTION_USE_INLINE_NAMESPACE
  const std::string ns = TERN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string prefix = "4absl" + std::to_string(ns.size()) + ns;
#else
  const std::string prefix = "4absl";
#endif
  return Next<Fn>((is_const ? "_ZNK" : "_ZN") + prefix + rest);
}

// A call that holds `mu` on entry and on return but may release it while
// waiting (Await, CondVar::Wait): a release, then an acquisition.
template <typename Call>
auto Reacquiring(void* mu, unsigned flags, Call call) {
  PreUnlock(mu, flags);
  auto result = call();
  PostUnlock(mu, flags);
  PreLock(mu, flags);
  PostLock(mu, flags);
  return result;
}

}  // namespace

extern "C" {

// grpc/grpc.h: grpc_call_error grpc_call_start_batch(grpc_call*, const
// grpc_op*, size_t, void* tag, void* reserved); void grpc_call_unref(grpc_call*).
int grpc_call_start_batch(void* call, const void* ops, size_t nops, void* tag, void* reserved) {
  static const auto real = Next<int (*)(void*, const void*, size_t, void*, void*)>(__func__);
  if (__tsan_release != nullptr) {
    __tsan_release(call);
    const grpc_op* op = static_cast<const grpc_op*>(ops);
    for (size_t i = 0; i < nops; ++i) {
      if (op[i].op == GRPC_OP_RECV_MESSAGE) {
        __tsan_release(&g_message_receives);
        break;
      }
    }
  }
  return real(call, ops, nops, tag, reserved);
}

// grpc/byte_buffer.h: int grpc_byte_buffer_reader_init(grpc_byte_buffer_reader*,
// grpc_byte_buffer*).
int grpc_byte_buffer_reader_init(void* reader, void* buffer) {
  static const auto real = Next<int (*)(void*, void*)>(__func__);
  if (__tsan_acquire != nullptr) __tsan_acquire(&g_message_receives);
  return real(reader, buffer);
}

void grpc_call_unref(void* call) {
  static const auto real = Next<void (*)(void*)>(__func__);
  if (__tsan_acquire != nullptr) __tsan_acquire(call);
  real(call);
}

}  // extern "C"

// grpc_core::Executor::Run(grpc_closure*, absl::Status, ExecutorType,
// ExecutorJobType) and Executor::RunClosures(const char*, grpc_closure_list).
// The absl::Status travels by invisible reference (a pointer to the caller's
// object, which the caller destroys) and grpc_closure_list is {head, tail}, so
// plain pointers carry both unchanged. A closure starts with its `next` link.
static_assert(sizeof(TERN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME)) == sizeof("debian3"),
              "the mangled names below spell abseil's inline namespace debian3");
extern "C" void TernExecutorRun(void* closure, void* error, int type, int job_type) __asm__(
    "_ZN9grpc_core8Executor3RunEP12grpc_closureN4absl7debian36StatusENS_12ExecutorTypeENS_"
    "15ExecutorJobTypeE");
extern "C" void TernExecutorRunClosures(const char* name, void* head, void* tail) __asm__(
    "_ZN9grpc_core8Executor11RunClosuresEPKc17grpc_closure_list");

void TernExecutorRun(void* closure, void* error, int type, int job_type) {
  static const auto real = Next<void (*)(void*, void*, int, int)>(
      "_ZN9grpc_core8Executor3RunEP12grpc_closureN4absl7debian36StatusENS_12ExecutorTypeENS_"
      "15ExecutorJobTypeE");
  if (__tsan_release != nullptr && closure != nullptr) __tsan_release(closure);
  real(closure, error, type, job_type);
}

void TernExecutorRunClosures(const char* name, void* head, void* tail) {
  static const auto real = Next<void (*)(const char*, void*, void*)>(
      "_ZN9grpc_core8Executor11RunClosuresEPKc17grpc_closure_list");
  if (__tsan_acquire != nullptr) {
    for (void* closure = head; closure != nullptr; closure = *static_cast<void**>(closure)) {
      __tsan_acquire(closure);
    }
  }
  real(name, head, tail);
}

namespace absl {
ABSL_NAMESPACE_BEGIN

Mutex::~Mutex() {
  static const auto real = Real<void (*)(Mutex*)>(false, "5MutexD1Ev");
  const Interposed call;
  if (Annotating()) __tsan_mutex_destroy(this, kNotStatic);
  real(this);
}

void Mutex::Lock() {
  static const auto real = Real<void (*)(Mutex*)>(false, "5Mutex4LockEv");
  const Interposed call;
  PreLock(this, 0);
  real(this);
  PostLock(this, 0);
}

void Mutex::ReaderLock() {
  static const auto real = Real<void (*)(Mutex*)>(false, "5Mutex10ReaderLockEv");
  const Interposed call;
  PreLock(this, kReadLock);
  real(this);
  PostLock(this, kReadLock);
}

bool Mutex::TryLock() {
  static const auto real = Real<bool (*)(Mutex*)>(false, "5Mutex7TryLockEv");
  const Interposed call;
  PreLock(this, kTryLock);
  const bool locked = real(this);
  PostLock(this, locked ? kTryLock : kTryLock | kTryLockFailed);
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const auto real = Real<bool (*)(Mutex*)>(false, "5Mutex13ReaderTryLockEv");
  const Interposed call;
  PreLock(this, kReadLock | kTryLock);
  const bool locked = real(this);
  PostLock(this, locked ? kReadLock | kTryLock : kReadLock | kTryLock | kTryLockFailed);
  return locked;
}

void Mutex::Unlock() {
  static const auto real = Real<void (*)(Mutex*)>(false, "5Mutex6UnlockEv");
  const Interposed call;
  PreUnlock(this, 0);
  real(this);
  PostUnlock(this, 0);
}

void Mutex::ReaderUnlock() {
  static const auto real = Real<void (*)(Mutex*)>(false, "5Mutex12ReaderUnlockEv");
  const Interposed call;
  PreUnlock(this, kReadLock);
  real(this);
  PostUnlock(this, kReadLock);
}

void Mutex::LockWhen(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>(false, "5Mutex8LockWhenERKNS0_9ConditionE");
  const Interposed call;
  PreLock(this, 0);
  real(this, cond);
  PostLock(this, 0);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      false, "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Interposed call;
  PreLock(this, 0);
  const bool result = real(this, cond, timeout);
  PostLock(this, 0);
  return result;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      false, "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Interposed call;
  PreLock(this, 0);
  const bool result = real(this, cond, deadline);
  PostLock(this, 0);
  return result;
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>(false, "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  const Interposed call;
  PreLock(this, kReadLock);
  real(this, cond);
  PostLock(this, kReadLock);
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      false, "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Interposed call;
  PreLock(this, kReadLock);
  const bool result = real(this, cond, timeout);
  PostLock(this, kReadLock);
  return result;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      false, "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Interposed call;
  PreLock(this, kReadLock);
  const bool result = real(this, cond, deadline);
  PostLock(this, kReadLock);
  return result;
}

// Await* are annotated as writer waits: our code (and gRPC's) awaits only
// under exclusive locks.
void Mutex::Await(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>(false, "5Mutex5AwaitERKNS0_9ConditionE");
  const Interposed call;
  Reacquiring(this, 0, [&] {
    real(this, cond);
    return true;
  });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      false, "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Interposed call;
  return Reacquiring(this, 0, [&] { return real(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      false, "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Interposed call;
  return Reacquiring(this, 0, [&] { return real(this, cond, deadline); });
}

void CondVar::Wait(Mutex* mu) {
  static const auto real = Real<void (*)(CondVar*, Mutex*)>(false, "7CondVar4WaitEPNS0_5MutexE");
  const Interposed call;
  Reacquiring(mu, 0, [&] {
    real(this, mu);
    return true;
  });
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static const auto real = Real<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      false, "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  const Interposed call;
  return Reacquiring(mu, 0, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static const auto real = Real<bool (*)(CondVar*, Mutex*, absl::Time)>(
      false, "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  const Interposed call;
  return Reacquiring(mu, 0, [&] { return real(this, mu, deadline); });
}

// Notification: the waits return early, without locking, once the flag is
// set, and HasBeenNotified() (inline, so instrumented) reads the flag alone;
// a release/acquire on the flag's address orders them after Notify().
void Notification::Notify() {
  static const auto real = Real<void (*)(Notification*)>(false, "12Notification6NotifyEv");
  const Interposed call;
  if (Annotating()) __tsan_release(&notified_yet_);
  real(this);
}

void Notification::WaitForNotification() const {
  static const auto real =
      Real<void (*)(const Notification*)>(true, "12Notification19WaitForNotificationEv");
  const Interposed call;
  real(this);
  if (Annotating()) __tsan_acquire(const_cast<std::atomic<bool>*>(&notified_yet_));
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static const auto real = Real<bool (*)(const Notification*, absl::Duration)>(
      true, "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const Interposed call;
  const bool notified = real(this, timeout);
  if (notified && Annotating()) {
    __tsan_acquire(const_cast<std::atomic<bool>*>(&notified_yet_));
  }
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static const auto real = Real<bool (*)(const Notification*, absl::Time)>(
      true, "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const Interposed call;
  const bool notified = real(this, deadline);
  if (notified && Annotating()) {
    __tsan_acquire(const_cast<std::atomic<bool>*>(&notified_yet_));
  }
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
