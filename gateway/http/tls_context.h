// The TLS side of the gateway's HTTPS listener: a server context built from
// a PEM certificate chain and its private key, and the holder that rebuilds
// it when the files change.
//
// A context speaks TLS 1.2 and 1.3 only; for 1.2, ECDHE key exchange with
// AEAD ciphers only (Mozilla's "intermediate" list, without DHE); for 1.3,
// OpenSSL's default suites. Renegotiation is off and ALPN selects http/1.1
// (a client offering only other protocols gets no ALPN answer).
//
// Rotation: Reload() (the gateway calls it on SIGHUP) and a poll of both
// files' modification times build a NEW context; new connections take it,
// connections already open keep the one they started with. A certificate or
// key that does not load, or a pair that does not match, is logged and the
// previous context kept. Write the files atomically (rename, or a Kubernetes
// Secret volume's symlink swap); a half-written pair fails to load and is
// picked up again when the second file changes.
//
// Thread-safe: Current() and Reload() from any thread; polling runs on a
// thread this object owns and joins.
#ifndef TERN_GATEWAY_HTTP_TLS_CONTEXT_H_
#define TERN_GATEWAY_HTTP_TLS_CONTEXT_H_

#include <boost/asio/ssl/context.hpp>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tern::gateway {

// A new server context from the two PEM files. INVALID_ARGUMENT naming the
// file when one cannot be read or parsed, or when the key does not belong
// to the certificate.
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> LoadServerTlsContext(
    const std::string& cert_file, const std::string& key_file);

class ServerTlsContext {
 public:
  // Loads the files (errors as LoadServerTlsContext). A positive
  // `poll_interval` starts the thread that checks their mtimes that often.
  static absl::StatusOr<std::unique_ptr<ServerTlsContext>> Load(std::string cert_file,
                                                                std::string key_file,
                                                                absl::Duration poll_interval);
  ~ServerTlsContext();

  ServerTlsContext(const ServerTlsContext&) = delete;
  ServerTlsContext& operator=(const ServerTlsContext&) = delete;

  // The context for the next connection.
  std::shared_ptr<boost::asio::ssl::context> Current() const;

  // Rebuilds the context from the files now. On error the current one stays.
  absl::Status Reload();
  // Reload() when either file's mtime differs from the previous attempt's;
  // OK when nothing changed.
  absl::Status ReloadIfChanged();

 private:
  using FileTimes = std::pair<std::optional<std::filesystem::file_time_type>,
                              std::optional<std::filesystem::file_time_type>>;

  ServerTlsContext(std::string cert_file, std::string key_file);
  FileTimes ReadFileTimes() const;
  void PollLoop(absl::Duration interval);

  // Constant after construction.
  const std::string cert_file_;
  const std::string key_file_;

  mutable absl::Mutex mu_;
  std::shared_ptr<boost::asio::ssl::context> current_ ABSL_GUARDED_BY(mu_);
  FileTimes seen_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Serializes reloads (Reload from a signal and from the poll thread).
  absl::Mutex reload_mu_;
  std::thread poller_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_HTTP_TLS_CONTEXT_H_
