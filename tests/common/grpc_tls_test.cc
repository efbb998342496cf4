#include "common/grpc_tls.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "cli/tls_certs.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"

namespace tern {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A gRPC server (the standard health service only) on 127.0.0.1:0 and
// certificates from two unrelated CAs, written under a fresh folder.
class GrpcTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tern_grpc_tls_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto ours = cli::WriteClusterCertificates(dir_ / "ours", {"server", "client"},
                                              {"127.0.0.1", "localhost"}, absl::Hours(1));
    auto theirs = cli::WriteClusterCertificates(dir_ / "theirs", {"client"},
                                                {"127.0.0.1", "localhost"}, absl::Hours(1));
    ASSERT_TRUE(ours.ok()) << ours.status();
    ASSERT_TRUE(theirs.ok()) << theirs.status();
    server_tls_ = ours->at("server");
    client_tls_ = ours->at("client");
    stranger_tls_ = theirs->at("client");
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    std::filesystem::remove_all(dir_);
  }

  void StartServer(std::shared_ptr<grpc::ServerCredentials> credentials) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port_);
    builder.RegisterCallbackGenericService(&unimplemented_);  // a server needs a service
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // A health check over `channel`: its status code.
  static grpc::StatusCode Check(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    grpc::health::v1::HealthCheckResponse response;
    return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).error_code();
  }

  std::filesystem::path dir_;
  TlsSection server_tls_;
  TlsSection client_tls_;
  TlsSection stranger_tls_;
  grpc::CallbackGenericService unimplemented_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(GrpcTlsTest, CheckTlsFilesAcceptsAFittingSetAndNamesWhatIsWrong) {
  EXPECT_TRUE(CheckTlsFiles(TlsSection{}).ok());
  EXPECT_TRUE(CheckTlsFiles(server_tls_).ok());

  TlsSection missing = server_tls_;
  missing.key_file = (dir_ / "nope.key").string();
  EXPECT_EQ(CheckTlsFiles(missing).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(CheckTlsFiles(missing).message().find("tls.key_file"), std::string::npos);

  TlsSection wrong_key = server_tls_;
  wrong_key.key_file = client_tls_.key_file;
  EXPECT_NE(CheckTlsFiles(wrong_key).message().find("not the key of"), std::string::npos);

  TlsSection wrong_ca = server_tls_;
  wrong_ca.ca_file = stranger_tls_.ca_file;
  EXPECT_NE(CheckTlsFiles(wrong_ca).message().find("does not verify"), std::string::npos)
      << CheckTlsFiles(wrong_ca);

  TlsSection not_pem = server_tls_;
  not_pem.ca_file = server_tls_.key_file;
  EXPECT_NE(CheckTlsFiles(not_pem).message().find("no PEM certificate"), std::string::npos);
}

TEST_F(GrpcTlsTest, MutualTlsAdmitsOnlyClientsWithACertificateFromTheCa) {
  StartServer(MakeServerCredentials(server_tls_, ClientCertificates::kRequireAndVerify));
  EXPECT_EQ(Check(ChannelSecurity(client_tls_).CreateChannel(address())), grpc::StatusCode::OK);
  // By name as well as by address: the certificate carries both.
  EXPECT_EQ(Check(ChannelSecurity(client_tls_).CreateChannel("localhost:" + std::to_string(port_))),
            grpc::StatusCode::OK);

  EXPECT_EQ(Check(ChannelSecurity().CreateChannel(address())), grpc::StatusCode::UNAVAILABLE);
  // A certificate from another CA: refused by the server (and the client
  // does not trust the server either).
  EXPECT_EQ(Check(ChannelSecurity(stranger_tls_).CreateChannel(address())),
            grpc::StatusCode::UNAVAILABLE);
  // Trusting the server but presenting no certificate.
  grpc::SslCredentialsOptions no_identity;
  no_identity.pem_root_certs = ReadText(client_tls_.ca_file);
  EXPECT_EQ(Check(grpc::CreateChannel(address(), grpc::SslCredentials(no_identity))),
            grpc::StatusCode::UNAVAILABLE);
  // Our client certificate, but the CA of the stranger: the server is not trusted.
  TlsSection mixed = client_tls_;
  mixed.ca_file = stranger_tls_.ca_file;
  EXPECT_EQ(Check(ChannelSecurity(mixed).CreateChannel(address())), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(GrpcTlsTest, ClientChecksTheServerNameOrItsOverride) {
  StartServer(MakeServerCredentials(server_tls_, ClientCertificates::kRequireAndVerify));
  TlsSection wrong_name = client_tls_;
  wrong_name.server_name_override = "router.example.com";
  EXPECT_EQ(Check(ChannelSecurity(wrong_name).CreateChannel(address())),
            grpc::StatusCode::UNAVAILABLE);
  TlsSection right_name = client_tls_;
  right_name.server_name_override = "localhost";
  EXPECT_EQ(Check(ChannelSecurity(right_name).CreateChannel(address())), grpc::StatusCode::OK);
}

TEST_F(GrpcTlsTest, PublicServerNeedsNoClientCertificate) {
  StartServer(MakeServerCredentials(server_tls_, ClientCertificates::kNotRequested));
  grpc::SslCredentialsOptions no_identity;
  no_identity.pem_root_certs = ReadText(client_tls_.ca_file);
  EXPECT_EQ(Check(grpc::CreateChannel(address(), grpc::SslCredentials(no_identity))),
            grpc::StatusCode::OK);
  EXPECT_EQ(Check(ChannelSecurity().CreateChannel(address())), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(GrpcTlsTest, WithoutTlsEverythingIsPlaintext) {
  StartServer(MakeServerCredentials(TlsSection{}, ClientCertificates::kRequireAndVerify));
  EXPECT_FALSE(ChannelSecurity(TlsSection{}).tls());
  EXPECT_EQ(Check(ChannelSecurity(TlsSection{}).CreateChannel(address())), grpc::StatusCode::OK);
}

TEST_F(GrpcTlsTest, RotatedFilesAreUsedWithoutARestart) {
  // The server reads its files every second; they are then replaced by a
  // set from a new CA, as a renewed Secret would be.
  TlsSection live;
  live.ca_file = (dir_ / "live_ca.crt").string();
  live.cert_file = (dir_ / "live.crt").string();
  live.key_file = (dir_ / "live.key").string();
  const auto install = [&](const TlsSection& from) {
    for (const auto& [source, target] :
         {std::pair{from.ca_file, live.ca_file}, std::pair{from.cert_file, live.cert_file},
          std::pair{from.key_file, live.key_file}}) {
      const std::string staged = target + ".new";
      std::filesystem::copy_file(source, staged, std::filesystem::copy_options::overwrite_existing);
      std::filesystem::rename(staged, target);
    }
  };
  install(server_tls_);
  StartServer(MakeServerCredentials(live, ClientCertificates::kRequireAndVerify, 1));
  EXPECT_EQ(Check(ChannelSecurity(client_tls_).CreateChannel(address())), grpc::StatusCode::OK);

  auto renewed = cli::WriteClusterCertificates(dir_ / "renewed", {"server", "client"},
                                               {"127.0.0.1", "localhost"}, absl::Hours(1));
  ASSERT_TRUE(renewed.ok());
  install(renewed->at("server"));
  const TlsSection renewed_client = renewed->at("client");
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  for (int attempt = 0; attempt < 50 && code != grpc::StatusCode::OK; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    code = Check(ChannelSecurity(renewed_client).CreateChannel(address()));
  }
  EXPECT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(Check(ChannelSecurity(client_tls_).CreateChannel(address())),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace tern
