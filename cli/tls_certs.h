// Throw-away certificates for a local cluster (`tern up --tls`): a private
// CA (EC P-256) and, per identity, a certificate it signs for both server and
// client use, naming the hosts it is reached at. Built with OpenSSL 3's C
// API; nothing here is meant for a long-lived deployment (the chart takes
// real certificates from Secrets).
//
// Pure functions (the file writer aside); thread-safe. Errors: INTERNAL when
// OpenSSL fails, INVALID_ARGUMENT for bad requests, the file system's status
// when writing fails.
#ifndef TERN_CLI_TLS_CERTS_H_
#define TERN_CLI_TLS_CERTS_H_

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/config.h"

namespace tern::cli {

// A certificate and its private key, both PEM (the key PKCS#8, unencrypted).
struct PemKeyPair {
  std::string certificate;
  std::string private_key;
};

// A self-signed CA: basicConstraints CA:TRUE (critical), keyUsage
// keyCertSign + cRLSign (critical), valid from five minutes ago (clock
// skew) for `validity`.
absl::StatusOr<PemKeyPair> MakeCertificateAuthority(const std::string& common_name,
                                                    absl::Duration validity);

// A leaf certificate signed by `ca`: CA:FALSE, keyUsage digitalSignature,
// extendedKeyUsage serverAuth + clientAuth, and a subjectAltName per host
// (an IP address for "127.0.0.1" or "::1", a DNS name otherwise). At least
// one host.
absl::StatusOr<PemKeyPair> IssueCertificate(const PemKeyPair& ca, const std::string& common_name,
                                            const std::vector<std::string>& hosts,
                                            absl::Duration validity);

// Writes a fresh CA into `dir` as ca.crt (its key is never written) and one
// certificate per identity as NAME.crt and NAME.key (mode 0600), creating
// `dir` (mode 0700) when missing. Returns each identity's `tls:` section.
absl::StatusOr<std::map<std::string, TlsSection>> WriteClusterCertificates(
    const std::filesystem::path& dir, const std::vector<std::string>& identities,
    const std::vector<std::string>& hosts, absl::Duration validity);

}  // namespace tern::cli

#endif  // TERN_CLI_TLS_CERTS_H_
