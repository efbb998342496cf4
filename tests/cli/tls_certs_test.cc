#include "cli/tls_certs.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>

#include "common/grpc_tls.h"
#include "common/openssl_ptr.h"
#include "gtest/gtest.h"

namespace tern::cli {
namespace {

X509Ptr ParseCertificate(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr certificate(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return certificate;
}

// X509_verify_cert's answer for `leaf` against `ca` alone, for `purpose`.
int Verify(X509* leaf, X509* ca, int purpose) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* context = X509_STORE_CTX_new();
  X509_STORE_CTX_init(context, store, leaf, nullptr);
  X509_STORE_CTX_set_purpose(context, purpose);
  const int verified = X509_verify_cert(context);
  const int error = verified == 1 ? X509_V_OK : X509_STORE_CTX_get_error(context);
  X509_STORE_CTX_free(context);
  X509_STORE_free(store);
  return error;
}

// Seconds from now until `time` (negative: in the past).
int64_t SecondsFromNow(const ASN1_TIME* time) {
  int days = 0;
  int seconds = 0;
  EXPECT_EQ(ASN1_TIME_diff(&days, &seconds, nullptr, time), 1);
  return int64_t{days} * 86400 + seconds;
}

class TlsCertsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = MakeCertificateAuthority("test CA", absl::Hours(24 * 7));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
    auto leaf = IssueCertificate(ca_, "router", {"127.0.0.1", "localhost"}, absl::Hours(24 * 7));
    ASSERT_TRUE(leaf.ok()) << leaf.status();
    leaf_ = *leaf;
  }

  PemKeyPair ca_;
  PemKeyPair leaf_;
};

TEST_F(TlsCertsTest, CaIsASelfSignedP256CertificateAuthority) {
  X509Ptr ca = ParseCertificate(ca_.certificate);
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_NE(X509_get_key_usage(ca.get()) & KU_KEY_CERT_SIGN, 0u);
  EXPECT_EQ(X509_verify(ca.get(), X509_get0_pubkey(ca.get())), 1);
  EVP_PKEY* key = X509_get0_pubkey(ca.get());
  EXPECT_EQ(EVP_PKEY_get_base_id(key), EVP_PKEY_EC);
  char group[64] = {};
  size_t length = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(key, group, sizeof(group), &length), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_NE(ca_.private_key.find("BEGIN PRIVATE KEY"), std::string::npos);
}

TEST_F(TlsCertsTest, LeafNamesItsHostsAndServesBothEnds) {
  X509Ptr leaf = ParseCertificate(leaf_.certificate);
  ASSERT_NE(leaf, nullptr);
  EXPECT_EQ(X509_check_ca(leaf.get()), 0);
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_host(leaf.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(leaf.get(), "example.com", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "10.0.0.1", 0), 0);
  EXPECT_NE(X509_get_key_usage(leaf.get()) & KU_DIGITAL_SIGNATURE, 0u);
  EXPECT_EQ(X509_get_key_usage(leaf.get()) & KU_KEY_CERT_SIGN, 0u);
  EXPECT_NE(X509_get_extended_key_usage(leaf.get()) & XKU_SSL_SERVER, 0u);
  EXPECT_NE(X509_get_extended_key_usage(leaf.get()) & XKU_SSL_CLIENT, 0u);
}

TEST_F(TlsCertsTest, ChainVerifiesAgainstItsCaOnly) {
  X509Ptr ca = ParseCertificate(ca_.certificate);
  X509Ptr leaf = ParseCertificate(leaf_.certificate);
  EXPECT_EQ(Verify(leaf.get(), ca.get(), X509_PURPOSE_SSL_SERVER), X509_V_OK);
  EXPECT_EQ(Verify(leaf.get(), ca.get(), X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  auto other = MakeCertificateAuthority("other CA", absl::Hours(1));
  ASSERT_TRUE(other.ok());
  X509Ptr other_ca = ParseCertificate(other->certificate);
  EXPECT_NE(Verify(leaf.get(), other_ca.get(), X509_PURPOSE_SSL_SERVER), X509_V_OK);
}

TEST_F(TlsCertsTest, ValidFromJustBeforeNowForTheGivenPeriod) {
  X509Ptr leaf = ParseCertificate(leaf_.certificate);
  const int64_t not_before = SecondsFromNow(X509_get0_notBefore(leaf.get()));
  const int64_t not_after = SecondsFromNow(X509_get0_notAfter(leaf.get()));
  EXPECT_LE(not_before, -60);
  EXPECT_GE(not_before, -600);
  EXPECT_NEAR(not_after, 7 * 86400, 60);
}

TEST_F(TlsCertsTest, SerialsDiffer) {
  auto second = IssueCertificate(ca_, "router", {"localhost"}, absl::Hours(1));
  ASSERT_TRUE(second.ok());
  X509Ptr a = ParseCertificate(leaf_.certificate);
  X509Ptr b = ParseCertificate(second->certificate);
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(a.get()), X509_get0_serialNumber(b.get())), 0);
}

TEST_F(TlsCertsTest, RefusesBadRequests) {
  EXPECT_EQ(IssueCertificate(ca_, "x", {}, absl::Hours(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueCertificate(ca_, "x", {"a,DNS:b"}, absl::Hours(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      IssueCertificate(PemKeyPair{"junk", "junk"}, "x", {"a"}, absl::Hours(1)).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCertificateAuthority("x", absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WriteClusterCertificatesTest, WritesPrivateKeysAndSectionsThatCheck) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("tern_tls_certs_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
       "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  auto sections = WriteClusterCertificates(dir, {"router", "worker"}, {"127.0.0.1", "localhost"},
                                           absl::Hours(24));
  ASSERT_TRUE(sections.ok()) << sections.status();
  ASSERT_EQ(sections->size(), 2u);
  struct stat info {};
  ASSERT_EQ(stat(dir.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
  EXPECT_FALSE(std::filesystem::exists(dir / "ca.key"));
  for (const auto& [name, tls] : *sections) {
    EXPECT_EQ(tls.ca_file, (dir / "ca.crt").string());
    EXPECT_EQ(tls.cert_file, (dir / (name + ".crt")).string());
    ASSERT_EQ(stat(tls.key_file.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u) << tls.key_file;
    EXPECT_TRUE(CheckTlsFiles(tls).ok()) << CheckTlsFiles(tls);
  }
  // A second run replaces the CA: the old sections' certificates no longer fit it.
  TlsSection old_router = sections->at("router");
  ASSERT_TRUE(std::filesystem::copy_file(old_router.cert_file, dir / "old.crt"));
  ASSERT_TRUE(WriteClusterCertificates(dir, {"router"}, {"localhost"}, absl::Hours(1)).ok());
  old_router.cert_file = (dir / "old.crt").string();
  EXPECT_FALSE(CheckTlsFiles(old_router).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tern::cli
