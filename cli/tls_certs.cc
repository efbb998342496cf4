#include "cli/tls_certs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/openssl_ptr.h"

namespace tern::cli {
namespace {

// OpenSSL's last error queued, as an INTERNAL status (the queue is cleared).
absl::Status OpenSslError(const std::string& what) {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  char text[256] = "unknown error";
  if (code != 0) ERR_error_string_n(code, text, sizeof(text));
  return absl::InternalError(absl::StrCat(what, ": ", text));
}

bool IsIpAddress(const std::string& host) {
  unsigned char buffer[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

absl::StatusOr<std::string> ToPem(int (*write)(BIO*, void*), void* object) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || write(bio.get(), object) != 1) return OpenSslError("cannot write PEM");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

absl::StatusOr<PemKeyPair> ToPemPair(X509* certificate, EVP_PKEY* key) {
  PemKeyPair pair;
  absl::StatusOr<std::string> cert_pem =
      ToPem([](BIO* bio, void* x) { return PEM_write_bio_X509(bio, static_cast<X509*>(x)); },
            certificate);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ToPem(
      [](BIO* bio, void* k) {
        return PEM_write_bio_PrivateKey(bio, static_cast<EVP_PKEY*>(k), nullptr, nullptr, 0,
                                        nullptr, nullptr);
      },
      key);
  if (!key_pem.ok()) return key_pem.status();
  pair.certificate = *std::move(cert_pem);
  pair.private_key = *std::move(key_pem);
  return pair;
}

absl::Status AddExtension(X509* certificate, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
  X509ExtensionPtr extension(X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str()));
  if (extension == nullptr || X509_add_ext(certificate, extension.get(), -1) != 1) {
    return OpenSslError(absl::StrCat("cannot add extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

// A certificate for `key` named `common_name`, with a random 127-bit serial
// and the validity period; unsigned, issuer unset.
absl::StatusOr<X509Ptr> NewCertificate(EVP_PKEY* key, const std::string& common_name,
                                       absl::Duration validity) {
  if (validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("certificate validity must be positive");
  }
  X509Ptr certificate(X509_new());
  unsigned char serial_bytes[16];
  if (certificate == nullptr || RAND_bytes(serial_bytes, sizeof(serial_bytes)) != 1) {
    return OpenSslError("cannot create a certificate");
  }
  serial_bytes[0] &= 0x7f;  // positive
  BignumPtr serial(BN_bin2bn(serial_bytes, sizeof(serial_bytes), nullptr));
  X509_NAME* name = X509_get_subject_name(certificate.get());
  if (serial == nullptr ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(certificate.get())) == nullptr ||
      X509_set_version(certificate.get(), 2) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -5 * 60) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(certificate.get()), absl::ToInt64Seconds(validity)) ==
          nullptr ||
      X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>("tern (throw-away)"), -1,
                                 -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1 ||
      X509_set_pubkey(certificate.get(), key) != 1) {
    return OpenSslError("cannot fill in a certificate");
  }
  return certificate;
}

absl::StatusOr<EvpKeyPtr> NewP256Key() {
  EvpKeyPtr key(EVP_EC_gen("P-256"));
  if (key == nullptr) return OpenSslError("cannot generate a P-256 key");
  return key;
}

absl::Status WriteFile(const std::filesystem::path& path, const std::string& text, mode_t mode) {
  // Created with its final mode, so a key is never readable by others.
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", path.string(), ": ", std::strerror(errno)));
  }
  bool ok = fchmod(fd, mode) == 0;  // the mode of a file that was already there
  size_t written = 0;
  while (ok && written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<size_t>(n);
  }
  ok = close(fd) == 0 && ok;
  if (!ok) {
    return absl::InternalError(
        absl::StrCat("cannot write ", path.string(), ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PemKeyPair> MakeCertificateAuthority(const std::string& common_name,
                                                    absl::Duration validity) {
  absl::StatusOr<EvpKeyPtr> key = NewP256Key();
  if (!key.ok()) return key.status();
  absl::StatusOr<X509Ptr> certificate = NewCertificate(key->get(), common_name, validity);
  if (!certificate.ok()) return certificate.status();
  X509* ca = certificate->get();
  if (X509_set_issuer_name(ca, X509_get_subject_name(ca)) != 1) {
    return OpenSslError("cannot name the issuer");
  }
  for (const auto& [nid, value] : std::initializer_list<std::pair<int, const char*>>{
           {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"},
           {NID_subject_key_identifier, "hash"}}) {
    if (absl::Status added = AddExtension(ca, ca, nid, value); !added.ok()) return added;
  }
  if (X509_sign(ca, key->get(), EVP_sha256()) == 0) return OpenSslError("cannot sign the CA");
  return ToPemPair(ca, key->get());
}

absl::StatusOr<PemKeyPair> IssueCertificate(const PemKeyPair& ca, const std::string& common_name,
                                            const std::vector<std::string>& hosts,
                                            absl::Duration validity) {
  if (hosts.empty()) return absl::InvalidArgumentError("a certificate needs at least one host");
  BioPtr ca_cert_bio(
      BIO_new_mem_buf(ca.certificate.data(), static_cast<int>(ca.certificate.size())));
  X509Ptr ca_cert(PEM_read_bio_X509(ca_cert_bio.get(), nullptr, nullptr, nullptr));
  BioPtr ca_key_bio(
      BIO_new_mem_buf(ca.private_key.data(), static_cast<int>(ca.private_key.size())));
  EvpKeyPtr ca_key(PEM_read_bio_PrivateKey(ca_key_bio.get(), nullptr, nullptr, nullptr));
  if (ca_cert == nullptr || ca_key == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the CA is not a PEM certificate and key");
  }
  absl::StatusOr<EvpKeyPtr> key = NewP256Key();
  if (!key.ok()) return key.status();
  absl::StatusOr<X509Ptr> certificate = NewCertificate(key->get(), common_name, validity);
  if (!certificate.ok()) return certificate.status();
  X509* leaf = certificate->get();
  if (X509_set_issuer_name(leaf, X509_get_subject_name(ca_cert.get())) != 1) {
    return OpenSslError("cannot name the issuer");
  }
  std::vector<std::string> names;
  for (const std::string& host : hosts) {
    if (host.empty() || host.find_first_of(",\n") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("bad host name '", host, "'"));
    }
    names.push_back(absl::StrCat(IsIpAddress(host) ? "IP:" : "DNS:", host));
  }
  const std::string alt_names = absl::StrJoin(names, ",");
  for (const auto& [nid, value] : std::initializer_list<std::pair<int, const char*>>{
           {NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, "critical,digitalSignature"},
           {NID_ext_key_usage, "serverAuth,clientAuth"},
           {NID_subject_key_identifier, "hash"},
           {NID_authority_key_identifier, "keyid:always"},
           {NID_subject_alt_name, alt_names.c_str()}}) {
    if (absl::Status added = AddExtension(leaf, ca_cert.get(), nid, value); !added.ok()) {
      return added;
    }
  }
  if (X509_sign(leaf, ca_key.get(), EVP_sha256()) == 0) {
    return OpenSslError("cannot sign the certificate");
  }
  return ToPemPair(leaf, key->get());
}

absl::StatusOr<std::map<std::string, TlsSection>> WriteClusterCertificates(
    const std::filesystem::path& dir, const std::vector<std::string>& identities,
    const std::vector<std::string>& hosts, absl::Duration validity) {
  std::error_code error;
  if (!std::filesystem::exists(dir, error)) {
    std::filesystem::create_directories(dir, error);
    if (error) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create ", dir.string(), ": ", error.message()));
    }
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, error);
  }
  absl::StatusOr<PemKeyPair> ca = MakeCertificateAuthority("tern throw-away CA", validity);
  if (!ca.ok()) return ca.status();
  const std::filesystem::path ca_file = dir / "ca.crt";
  if (absl::Status written = WriteFile(ca_file, ca->certificate, 0644); !written.ok()) {
    return written;
  }
  std::map<std::string, TlsSection> sections;
  for (const std::string& name : identities) {
    absl::StatusOr<PemKeyPair> issued = IssueCertificate(*ca, "tern " + name, hosts, validity);
    if (!issued.ok()) return issued.status();
    TlsSection& tls = sections[name];
    tls.ca_file = ca_file.string();
    tls.cert_file = (dir / (name + ".crt")).string();
    tls.key_file = (dir / (name + ".key")).string();
    if (absl::Status written = WriteFile(tls.key_file, issued->private_key, 0600); !written.ok()) {
      return written;
    }
    if (absl::Status written = WriteFile(tls.cert_file, issued->certificate, 0644); !written.ok()) {
      return written;
    }
  }
  return sections;
}

}  // namespace tern::cli
