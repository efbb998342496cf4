// gRPC credentials for the hops between the tiers, built from tern.yaml's
// `tls:` section (common/config.h) in this one place.
//
// With the section set, every hop is mutual TLS: a server (router, worker)
// requires a client certificate and verifies it against tls.ca_file; a
// client (gateway -> router, router -> worker, worker -> router
// registration, `tern up`'s probes) presents tls.cert_file and verifies the
// server's chain against tls.ca_file and its name against the host of the
// address it dials (gRPC's default authority: "127.0.0.1" for
// "127.0.0.1:50051", "tern-router.ns.svc" for "tern-router.ns.svc:50051";
// the DNS name for "dns:NAME:PORT" workers is each address NAME resolves
// to, so worker certificates carry their pod IPs or the dialled name is
// overridden), or against tls.server_name_override when that is set. Without
// the section everything is plaintext, as before.
//
// Rotation: the files are read by gRPC's FileWatcherCertificateProvider,
// which reads them again every kTlsReloadSeconds; new connections then use
// the new key, certificate and CA without a restart (connections already up
// keep theirs). Replace the files atomically (a Kubernetes Secret volume
// does: it swaps a symlinked folder).
//
// Pure functions over the files; the credentials they return are
// thread-safe and may be shared by any number of servers and channels.
#ifndef TERN_COMMON_GRPC_TLS_H_
#define TERN_COMMON_GRPC_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"

namespace tern {

// How often the certificate provider reads the files again.
inline constexpr unsigned int kTlsReloadSeconds = 60;

// What a server asks of its clients.
enum class ClientCertificates {
  // Mutual TLS: a certificate signed by tls.ca_file, or the handshake fails.
  kRequireAndVerify,
  // Server-side TLS only (clients authenticate otherwise, e.g. API keys).
  kNotRequested,
};

// For --check-config and start-up: the three files exist, the CA file holds
// at least one certificate, the key is the certificate's, and the
// certificate (with any intermediates that follow it in cert_file) verifies
// against the CA now. OK when the section is empty; INVALID_ARGUMENT naming
// the key and the file otherwise.
absl::Status CheckTlsFiles(const TlsSection& tls);

// Server credentials for a listening port: insecure when `tls` is empty,
// else TLS with the tier's certificate and `clients` as above. Does not read
// the files itself: call CheckTlsFiles first for clear errors.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsSection& tls, ClientCertificates clients,
    unsigned int reload_seconds = kTlsReloadSeconds);

// How a tier dials another: its channel credentials and the name the server's
// certificate must carry. Copyable; copies share the credentials.
class ChannelSecurity {
 public:
  // Plaintext channels.
  ChannelSecurity();
  // Plaintext when `tls` is empty; else mutual TLS as the header says.
  explicit ChannelSecurity(const TlsSection& tls, unsigned int reload_seconds = kTlsReloadSeconds);

  bool tls() const { return tls_; }
  // A channel to `target` ("host:port", or any gRPC target) with `args` plus
  // the server-name override when one is configured.
  std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target,
                                               grpc::ChannelArguments args = {}) const;

 private:
  bool tls_ = false;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::string server_name_override_;
};

}  // namespace tern

#endif  // TERN_COMMON_GRPC_TLS_H_
