#include "gateway/http/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstring>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::gateway {
namespace {

namespace ssl = boost::asio::ssl;

// Mozilla's "intermediate" TLS 1.2 list without DHE (no DH parameters to
// manage): forward-secret ECDHE with AEAD ciphers only.
constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// ALPN protocol list in wire format: length-prefixed names.
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
               unsigned int in_len, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_len, kAlpnHttp11, sizeof(kAlpnHttp11), in, in_len) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

absl::Status FileError(const std::string& what, const std::string& file,
                       const boost::system::error_code& ec) {
  return absl::InvalidArgumentError(
      absl::StrCat("gateway TLS: cannot load the ", what, " ", file, ": ", ec.message()));
}

}  // namespace

absl::StatusOr<std::shared_ptr<ssl::context>> LoadServerTlsContext(const std::string& cert_file,
                                                                   const std::string& key_file) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                       ec);
  SSL_CTX* native = context->native_handle();
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    ERR_clear_error();
    return absl::InternalError("gateway TLS: OpenSSL refused the protocol or cipher settings");
  }
  SSL_CTX_set_alpn_select_cb(native, SelectAlpn, nullptr);
  context->use_certificate_chain_file(cert_file, ec);
  if (ec) return FileError("certificate chain", cert_file, ec);
  context->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) return FileError("private key", key_file, ec);
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("gateway TLS: the private key ", key_file,
                                                   " does not match the certificate ", cert_file));
  }
  return context;
}

ServerTlsContext::ServerTlsContext(std::string cert_file, std::string key_file)
    : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)) {}

absl::StatusOr<std::unique_ptr<ServerTlsContext>> ServerTlsContext::Load(
    std::string cert_file, std::string key_file, absl::Duration poll_interval) {
  std::unique_ptr<ServerTlsContext> tls(
      new ServerTlsContext(std::move(cert_file), std::move(key_file)));
  const FileTimes times = tls->ReadFileTimes();
  auto context = LoadServerTlsContext(tls->cert_file_, tls->key_file_);
  if (!context.ok()) return context.status();
  {
    absl::MutexLock lock(&tls->mu_);
    tls->current_ = *std::move(context);
    tls->seen_ = times;
  }
  if (poll_interval > absl::ZeroDuration()) {
    tls->poller_ = std::thread([raw = tls.get(), poll_interval] { raw->PollLoop(poll_interval); });
  }
  return tls;
}

ServerTlsContext::~ServerTlsContext() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (poller_.joinable()) poller_.join();
}

std::shared_ptr<ssl::context> ServerTlsContext::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

absl::Status ServerTlsContext::Reload() {
  absl::MutexLock reload_lock(&reload_mu_);
  const FileTimes times = ReadFileTimes();
  auto context = LoadServerTlsContext(cert_file_, key_file_);
  absl::MutexLock lock(&mu_);
  // Remembered on failure too: a bad pair is reported once, not every poll.
  seen_ = times;
  if (!context.ok()) {
    TERN_LOG(Error) << context.status().message() << "; keeping the previous certificate";
    return context.status();
  }
  current_ = *std::move(context);
  TERN_LOG(Info) << "gateway TLS: loaded certificate " << cert_file_ << " for new connections";
  return absl::OkStatus();
}

absl::Status ServerTlsContext::ReloadIfChanged() {
  const FileTimes times = ReadFileTimes();
  {
    absl::MutexLock lock(&mu_);
    if (times == seen_) return absl::OkStatus();
  }
  return Reload();
}

ServerTlsContext::FileTimes ServerTlsContext::ReadFileTimes() const {
  auto time_of = [](const std::string& file) -> std::optional<std::filesystem::file_time_type> {
    std::error_code ec;
    const auto time = std::filesystem::last_write_time(file, ec);
    if (ec) return std::nullopt;
    return time;
  };
  return {time_of(cert_file_), time_of(key_file_)};
}

void ServerTlsContext::PollLoop(absl::Duration interval) {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval)) return;
    }
    ReloadIfChanged().IgnoreError();
  }
}

}  // namespace tern::gateway
