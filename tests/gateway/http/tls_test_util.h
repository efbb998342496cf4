// TLS helpers for the gateway's HTTPS tests: a throwaway self-signed
// certificate made with OpenSSL's APIs (EC P-256, SAN 127.0.0.1 and
// localhost), and a blocking TLS client that trusts exactly one such
// certificate and sends raw HTTP/1.1 over the connection. Reads time out
// after 10 s so a broken server fails the test instead of hanging it.
#ifndef TERN_TESTS_GATEWAY_HTTP_TLS_TEST_UTIL_H_
#define TERN_TESTS_GATEWAY_HTTP_TLS_TEST_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace tern::gateway::testing {

// Writes a new key and a self-signed certificate for `common_name` as PEM
// files. False on any OpenSSL or file error.
inline bool WriteSelfSignedCert(const std::string& cert_file, const std::string& key_file,
                                const std::string& common_name) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509* cert = X509_new();
  bool ok = key != nullptr && cert != nullptr;
  if (ok) {
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), static_cast<long>(::getpid()));
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                               0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    X509_EXTENSION* san =
        X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
    ok = san != nullptr && X509_add_ext(cert, san, -1) == 1;
    X509_EXTENSION_free(san);
    ok = ok && X509_sign(cert, key, EVP_sha256()) > 0;
  }
  // Written beside, then renamed: the server may be polling the files.
  auto write = [](const std::string& path, auto&& emit) {
    const std::string temp = path + ".tmp";
    FILE* file = std::fopen(temp.c_str(), "w");
    if (file == nullptr) return false;
    const bool written = emit(file);
    return std::fclose(file) == 0 && written && std::rename(temp.c_str(), path.c_str()) == 0;
  };
  ok = ok && write(key_file, [&](FILE* f) {
         return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
       });
  ok = ok && write(cert_file, [&](FILE* f) { return PEM_write_X509(f, cert) == 1; });
  X509_free(cert);
  EVP_PKEY_free(key);
  return ok;
}

class TlsTestClient {
 public:
  // Connects to 127.0.0.1:port and handshakes, trusting only `ca_file`.
  // `max_version` 0: the library's highest.
  TlsTestClient(uint16_t port, const std::string& ca_file, int max_version = 0) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (max_version != 0) SSL_CTX_set_max_proto_version(ctx_, max_version);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr) != 1) return;
    static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx_, kAlpn, sizeof(kAlpn));
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval timeout{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set1_host(ssl_, "127.0.0.1");
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~TlsTestClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    SSL_CTX_free(ctx_);
  }

  // Whether the handshake succeeded and the server's certificate verified.
  bool connected() const { return connected_; }
  std::string version() const { return ssl_ ? SSL_get_version(ssl_) : ""; }
  std::string cipher() const { return ssl_ ? SSL_get_cipher_name(ssl_) : ""; }
  std::string alpn() const {
    const unsigned char* data = nullptr;
    unsigned int size = 0;
    if (ssl_ != nullptr) SSL_get0_alpn_selected(ssl_, &data, &size);
    return std::string(reinterpret_cast<const char*>(data), data ? size : 0);
  }
  // The common name of the certificate the server presented.
  std::string PeerCommonName() const {
    X509* cert = ssl_ ? SSL_get1_peer_certificate(ssl_) : nullptr;
    if (cert == nullptr) return "";
    char name[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof(name));
    X509_free(cert);
    return name;
  }

  // Sends `request` and reads one response with a Content-Length body;
  // returns it whole (head and body), or "" on error.
  std::string Request(std::string_view request) {
    if (!connected_) return "";
    if (SSL_write(ssl_, request.data(), static_cast<int>(request.size())) <= 0) return "";
    std::string response;
    size_t head_end = std::string::npos;
    size_t length = 0;
    for (;;) {
      if (head_end == std::string::npos) {
        head_end = response.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          const size_t at = response.find("Content-Length: ");
          if (at != std::string::npos && at < head_end)
            length = std::stoul(response.substr(at + 16));
        }
      }
      if (head_end != std::string::npos && response.size() >= head_end + 4 + length) {
        return response;
      }
      char buf[4096];
      const int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n <= 0) return "";
      response.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
};

}  // namespace tern::gateway::testing

#endif  // TERN_TESTS_GATEWAY_HTTP_TLS_TEST_UTIL_H_
