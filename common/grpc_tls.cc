#include "common/grpc_tls.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/openssl_ptr.h"

namespace tern {
namespace {

struct StackFree {
  void operator()(STACK_OF(X509) * stack) const { sk_X509_free(stack); }
};

absl::StatusOr<std::string> ReadFile(const char* key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("tls.", key, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

BioPtr MemoryBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Every certificate in a PEM text, in order.
std::vector<X509Ptr> ReadCertificates(const std::string& pem) {
  std::vector<X509Ptr> certificates;
  auto bio = MemoryBio(pem);
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certificates.emplace_back(x);
  }
  ERR_clear_error();  // the end of the text reads as an error
  return certificates;
}

absl::Status Invalid(const char* key, const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tls.", key, " (", path, "): ", what));
}

}  // namespace

absl::Status CheckTlsFiles(const TlsSection& tls) {
  if (!tls.enabled()) return absl::OkStatus();
  absl::StatusOr<std::string> ca_pem = ReadFile("ca_file", tls.ca_file);
  if (!ca_pem.ok()) return ca_pem.status();
  absl::StatusOr<std::string> cert_pem = ReadFile("cert_file", tls.cert_file);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadFile("key_file", tls.key_file);
  if (!key_pem.ok()) return key_pem.status();

  const std::vector<X509Ptr> cas = ReadCertificates(*ca_pem);
  if (cas.empty()) return Invalid("ca_file", tls.ca_file, "no PEM certificate");
  const std::vector<X509Ptr> chain = ReadCertificates(*cert_pem);
  if (chain.empty()) return Invalid("cert_file", tls.cert_file, "no PEM certificate");
  auto key_bio = MemoryBio(*key_pem);
  EvpKeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (key == nullptr) return Invalid("key_file", tls.key_file, "no PEM private key");
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return Invalid("key_file", tls.key_file, "not the key of " + tls.cert_file);
  }

  X509StorePtr store(X509_STORE_new());
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<STACK_OF(X509), StackFree> intermediates(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(intermediates.get(), chain[i].get());
  X509StoreCtxPtr context(X509_STORE_CTX_new());
  if (X509_STORE_CTX_init(context.get(), store.get(), chain.front().get(), intermediates.get()) !=
      1) {
    return absl::InternalError("tls: cannot set up certificate verification");
  }
  if (X509_verify_cert(context.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(context.get());
    ERR_clear_error();
    return Invalid("cert_file", tls.cert_file,
                   absl::StrCat("does not verify against ", tls.ca_file, ": ",
                                X509_verify_cert_error_string(error)));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsSection& tls,
                                                               ClientCertificates clients,
                                                               unsigned int reload_seconds) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  const bool mutual = clients == ClientCertificates::kRequireAndVerify;
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, mutual ? tls.ca_file : std::string(), reload_seconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (mutual) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

ChannelSecurity::ChannelSecurity() : credentials_(grpc::InsecureChannelCredentials()) {}

ChannelSecurity::ChannelSecurity(const TlsSection& tls, unsigned int reload_seconds)
    : tls_(tls.enabled()), server_name_override_(tls.server_name_override) {
  if (!tls_) {
    credentials_ = grpc::InsecureChannelCredentials();
    return;
  }
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.ca_file, reload_seconds);
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(std::move(provider));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  // Said explicitly rather than left to the version's default: the server's
  // certificate must name the host dialled (or the override).
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  credentials_ = grpc::experimental::TlsCredentials(options);
}

std::shared_ptr<grpc::Channel> ChannelSecurity::CreateChannel(const std::string& target,
                                                              grpc::ChannelArguments args) const {
  if (!server_name_override_.empty()) args.SetSslTargetNameOverride(server_name_override_);
  return grpc::CreateCustomChannel(target, credentials_, args);
}

}  // namespace tern
