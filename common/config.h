// tern.yaml: one file describes the whole cluster; each binary reads its own
// section and its flags override it. Loading never throws: yaml-cpp's
// exceptions become InvalidArgument/NotFound statuses naming the key.
#ifndef TERN_COMMON_CONFIG_H_
#define TERN_COMMON_CONFIG_H_

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/flags.h"

namespace tern {

struct ModelSection {
  // Hugging Face model directory.
  std::string path;
  // Name clients use; defaults to the directory's base name.
  std::string served_name;
  // 0: the checkpoint's max_position_embeddings (capped by the worker).
  int32_t max_model_len = 0;
};

struct WorkerSection {
  // "native": tern's own engine on the CPUs; "vllm": the vLLM servers below.
  std::string engine = "native";
  // engine vllm: one "URL[,events=ENDPOINT][,replay=ENDPOINT][,model=NAME]"
  // per vLLM server (worker/vllm/vllm_server_spec.h); server i is served as
  // its own routable worker on the listen port + i.
  std::vector<std::string> vllm;
  std::string listen = "127.0.0.1:50061";
  // Sequences the worker accepts at once; more wait in its queue.
  int32_t max_num_seqs = 8;
  // Requests waiting in the worker beyond max_num_seqs before RESOURCE_EXHAUSTED.
  int32_t max_queue = 256;
  // Token slots per KV block (the router hashes prompts with the same size).
  int32_t kv_block_size = 16;
  // Size of the paged KV pool.
  double kv_cache_gib = 1.0;
  // Tokens computed per engine step (decodes plus prefill chunks).
  int32_t max_num_batched_tokens = 256;
  bool enable_prefix_caching = true;
  // Tensor-parallel ranks, one pinned thread each; 0: one per core the
  // process may run on.
  int32_t tp = 0;
  // CPUs the ranks are pinned to, in rank order (`tern up --workers N` gives
  // each worker its share); empty: the CPUs the process may run on.
  std::vector<int32_t> cpus;
  // The native engine's lm_head: "auto" (quantized to int8 at load when the
  // model's linear layers are 8-bit), "as-stored" or "int8"
  // (worker::LmHeadFormat).
  std::string lm_head = "auto";
  std::string metrics_listen;  // empty: no /metrics endpoint
};

struct RouterSection {
  std::string listen = "127.0.0.1:50051";
  // prefix | least-loaded | round-robin | random
  std::string policy = "prefix";
  // Model name -> policy for that model instead of `policy`. Names are
  // checked by the router when it starts (router::ParseModelPolicies).
  std::map<std::string, std::string> model_policies;
  // Requests with a session key (OpenAI `user`) stay on one worker while it
  // is not overloaded (rendezvous hashing; router/policy.h).
  bool session_affinity = true;
  // "HOST:PORT", or "dns:NAME:PORT": every address NAME resolves to (e.g. a
  // Kubernetes headless Service), resolved again every dns_refresh_ms.
  std::vector<std::string> workers;
  int32_t dns_refresh_ms = 5000;
  // Workers may also join with Router.RegisterWorker (tern-worker
  // --register-with); one stays a member while it renews within this lease.
  int32_t registration_lease_ms = 10000;
  int32_t health_interval_ms = 1000;
  // Time a worker may take to answer a health check.
  int32_t health_timeout_ms = 1000;
  std::string metrics_listen;
  // Requests the router keeps in flight on a worker beyond its max_num_seqs.
  int32_t slack = 2;
  // Global queue per model: requests waiting for a worker, and how long one may wait.
  int32_t max_queue = 1024;
  int32_t max_queue_wait_ms = 30000;
  // A queued request that has waited this long goes before every later
  // arrival, whatever their priorities (the starvation bound of priorities).
  int32_t max_priority_wait_ms = 10000;
  // Overload pacing: while more arrives than the workers complete at full
  // room, each worker is held to a concurrency at which its TTFT stays within
  // this factor of its TTFT alone (router/core/dispatcher.h); 0: off, else >= 1.
  double overload_ttft_factor = 0;
  // A worker with work whose engine makes no step for this long is unhealthy.
  int32_t stall_timeout_ms = 3000;
  // Re-dispatches of a request whose worker failed (mid-stream: resumed).
  int32_t max_retries = 3;
  // Consecutive failed calls that open a worker's circuit, and for how long.
  int32_t circuit_failures = 3;
  int32_t circuit_cooldown_ms = 5000;
};

struct GatewaySection {
  std::string listen = "127.0.0.1:8000";
  // The public gRPC API (tern.v1.Inference, with reflection and health),
  // "host:port"; empty: not served. Off by default: a second public port is
  // something to open on purpose (`tern up` and the Helm chart turn it on).
  std::string grpc_listen;
  std::string router = "127.0.0.1:50051";
  int64_t max_body_bytes = 1 << 20;
  // Default request timeout when the client gives none.
  int32_t request_timeout_s = 600;
  int32_t io_threads = 0;  // 0: one per core
  // Keys in clear (hashed when loaded); prefer api_key_file.
  std::vector<std::string> api_keys;
  // A key file of names and salted hashes (`tern keys add`); empty: none.
  std::string api_key_file;
  // The front door (README "Front door and HTTPS"). Caps on open HTTP
  // connections, in total and per client address (0: none); a connection
  // over a cap is closed as soon as it is accepted.
  int32_t max_connections = 10000;
  int32_t max_connections_per_client = 1024;
  // 408 for a request whose header is not complete this long after its
  // first byte (also the TLS handshake's bound), or whose body stalls this
  // long between two reads (nginx's client_header/body_timeout).
  int32_t header_timeout_s = 60;
  int32_t body_idle_timeout_s = 60;
  // PEM certificate chain and private key, both or neither: with them the
  // HTTP listener speaks HTTPS only; reloaded on SIGHUP or when they change.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// vLLM Neuron servers on one trn2.48xlarge, as `tern neuron plan` renders
// them (cli/neuron/neuron_plan.h checks how these keys fit together; here only
// that the "0: derived" ones are not negative). Unverified on hardware.
struct NeuronSection {
  std::string instance_type = "trn2.48xlarge";
  // Physical NeuronCores per logical core: 2 (the default, 64 cores) or 1 (128).
  int32_t lnc = 2;
  int32_t tp = 16;
  // vLLM servers on the instance; 0: logical cores / tp.
  int32_t servers = 0;
  // 0: model.max_model_len (the gateway's context limit).
  int32_t max_model_len = 0;
  int32_t max_num_seqs = 8;
  // 0: the last prefill bucket (it must equal it when set).
  int32_t max_num_batched_tokens = 0;
  int32_t block_size = 128;
  int32_t optimization_level = 2;
  // neuron_config.num_batched_tokens_buckets, ascending.
  std::vector<int32_t> prefill_buckets = {8192};
  // Empty: prefill_buckets (it must equal them when set).
  std::vector<int32_t> kv_segment_size_buckets;
  // Empty: [max_num_seqs].
  std::vector<int32_t> num_seqs_buckets;
  // auto | true | false: FP8 (ModelOpt) checkpoint, hence packed FP8 KV;
  // auto reads model.path/config.json.
  std::string fp8 = "auto";
  // Servers listen on host; server i on port + i, its KV events on
  // kv_events_port + i and the replay socket on kv_replay_port + i.
  std::string host = "127.0.0.1";
  int32_t port = 8100;
  int32_t kv_events_port = 5557;
  int32_t kv_replay_port = 5657;
  // VLLM_CACHE_ROOT (the compile cache) and NEURON_LIBTORCH_REMOTE_CACHE
  // (a shared tier; empty: none).
  std::string cache_root = "/var/cache/tern/vllm";
  std::string remote_cache;
  // More `vllm serve` arguments; none the plan derives, never --quantization.
  std::vector<std::string> extra_args;
};

// Mutual TLS on every gRPC hop between the tiers (common/grpc_tls.h): the
// router's and the workers' servers require a client certificate signed by
// ca_file; every tier's client presents cert_file and checks the server's
// certificate against ca_file and the host it dials. All three files, or none
// (plaintext).
struct TlsSection {
  std::string ca_file;
  std::string cert_file;  // PEM chain: the tier's certificate first
  std::string key_file;
  // The name a server's certificate must carry instead of the host of the
  // address dialled (e.g. when peers are dialled by IP); empty: that host.
  std::string server_name_override;

  bool enabled() const { return !cert_file.empty(); }
};

struct ClusterConfig {
  ModelSection model;
  WorkerSection worker;
  RouterSection router;
  GatewaySection gateway;
  NeuronSection neuron;
  TlsSection tls;
};

// Parses YAML text. Unknown keys are rejected so typos do not pass silently.
absl::StatusOr<ClusterConfig> ParseClusterConfig(const std::string& yaml_text);
// The range checks ParseClusterConfig applies (sizes and periods positive);
// INVALID_ARGUMENT naming the key.
absl::Status ValidateClusterConfig(const ClusterConfig& config);
// The name clients use for a model when none is configured: the base name of
// its directory ("models/x/" and "models/x/." give "x"). Gateway and worker
// must agree on it, so both call this. Empty when the path names no folder.
std::string DefaultServedModelName(const std::string& model_path);

// Reads and parses a file; NotFound when it does not exist.
absl::StatusOr<ClusterConfig> LoadClusterConfig(const std::string& path);

// A config field that a command-line flag replaces when it is given: a
// string as given; an int32 or a double parsed; a list split at commas
// (empty items dropped); a bool set to `value_when_given` by a flag that
// takes no value (`--no-prefix-caching` -> enable_prefix_caching = false;
// `--no-prefix-caching=false` leaves it).
class FlagOverride {
 public:
  FlagOverride(std::string flag, std::string* field);
  FlagOverride(std::string flag, int32_t* field);
  FlagOverride(std::string flag, double* field);
  FlagOverride(std::string flag, std::vector<std::string>* field);
  FlagOverride(std::string flag, std::vector<int32_t>* field);
  FlagOverride(std::string flag, bool* field, bool value_when_given);

  // Sets the field when `flags` has the flag. INVALID_ARGUMENT naming the
  // flag when its value does not parse; the field is then unchanged.
  absl::Status Apply(const Flags& flags) const;

 private:
  std::string flag_;
  std::variant<std::string*, int32_t*, double*, std::vector<std::string>*, std::vector<int32_t>*,
               bool*>
      field_;
  bool value_when_given_ = true;
};

// What every binary's main does with its flags and tern.yaml: fills
// `*config` from the file named by --config (the defaults when the flag is
// absent), then applies each override whose flag was given, in order, and
// validates the result. The overrides point into `*config`. NOT_FOUND /
// INVALID_ARGUMENT from LoadClusterConfig; INVALID_ARGUMENT from
// FlagOverride::Apply and ValidateClusterConfig.
//
//   tern::ClusterConfig config;
//   absl::Status status = tern::LoadConfigWithFlags(*flags, &config, {
//       {"listen", &config.router.listen},
//       {"max-queue", &config.router.max_queue},
//       {"workers", &config.router.workers}});
absl::Status LoadConfigWithFlags(const Flags& flags, ClusterConfig* config,
                                 std::initializer_list<FlagOverride> overrides);

}  // namespace tern

#endif  // TERN_COMMON_CONFIG_H_
