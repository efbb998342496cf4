{{/*
Names, labels, the rendered tern.yaml, and the checks that make a bad value
set fail at install time (tern.validate) instead of in a pod.
*/}}

{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tern.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A tier's object name: tern.component (dict "root" $ "component" "router"). */}}
{{- define "tern.component" -}}
{{- printf "%s-%s" (include "tern.fullname" .root | trunc 56 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "tern.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tern.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Every object's labels: tern.labels (dict "root" $ "component" "gateway"|""). */}}
{{- define "tern.labels" -}}
{{ include "tern.selectorLabels" . }}
app.kubernetes.io/part-of: tern
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tern.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Service names as the pods resolve them. */}}
{{- define "tern.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "tern.component" .) .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/* The model folder inside every pod that mounts it. */}}
{{- define "tern.modelPath" -}}
{{- if eq .Values.model.source "demo" -}}
{{- printf "%s/%s" .Values.model.mountPath .Values.model.demo.name -}}
{{- else -}}
{{- printf "%s/%s" .Values.model.mountPath (.Values.model.pvc.dir | trimPrefix "/") | trimSuffix "/" -}}
{{- end -}}
{{- end -}}

{{/*
The one tern.yaml: the `config` values with the keys the chart owns filled in
(model.path, listen addresses, the worker DNS entries, the router address;
on trn2 the neuron section's deployment keys, and the worker's block size and
batch taken from it).
*/}}
{{- define "tern.configYaml" -}}
{{- $config := .Values.config | default dict -}}
{{- $trn2 := eq .Values.profile "trn2" -}}
{{- $model := merge (dict "path" (include "tern.modelPath" .)) (deepCopy ($config.model | default dict)) -}}
{{- $workerOwned := dict
      "listen" (printf "0.0.0.0:%d" (int .Values.worker.grpcPort))
      "metrics_listen" (printf "0.0.0.0:%d" (int .Values.worker.metricsPort)) -}}
{{- if $trn2 -}}
{{- $_ := set $workerOwned "kv_block_size" (int $config.neuron.block_size) -}}
{{- $_ := set $workerOwned "max_num_seqs" (int $config.neuron.max_num_seqs) -}}
{{- end -}}
{{- $worker := merge $workerOwned (deepCopy ($config.worker | default dict)) -}}
{{- $workerHost := include "tern.serviceHost" (dict "root" . "component" "worker") -}}
{{- $workerDns := list -}}
{{- range $port := include "tern.workerGrpcPorts" . | fromJsonArray -}}
{{- $workerDns = append $workerDns (printf "dns:%s:%d" $workerHost (int $port)) -}}
{{- end -}}
{{- $router := merge (dict
      "listen" (printf "0.0.0.0:%d" (int .Values.router.grpcPort))
      "metrics_listen" (printf "0.0.0.0:%d" (int .Values.router.metricsPort))
      "workers" $workerDns)
    (deepCopy ($config.router | default dict)) -}}
{{- $gatewayOwned := dict
      "listen" (printf "0.0.0.0:%d" (int .Values.gateway.port))
      "router" (printf "%s:%d" (include "tern.serviceHost" (dict "root" . "component" "router")) (int .Values.router.grpcPort)) -}}
{{- if .Values.gateway.apiKeySecret -}}
{{- $_ := set $gatewayOwned "api_key_file" (include "tern.apiKeyFile" .) -}}
{{- end -}}
{{- if .Values.gateway.tlsSecretName -}}
{{- $_ := set $gatewayOwned "tls_cert_file" (include "tern.httpsCertFile" .) -}}
{{- $_ := set $gatewayOwned "tls_key_file" (printf "%s/tls.key" (include "tern.httpsCertFile" . | dir)) -}}
{{- end -}}
{{- if gt (int .Values.gateway.grpcPort) 0 -}}
{{- $_ := set $gatewayOwned "grpc_listen" (printf "0.0.0.0:%d" (int .Values.gateway.grpcPort)) -}}
{{- end -}}
{{- $gateway := merge $gatewayOwned (deepCopy ($config.gateway | default dict)) -}}
{{- $file := dict "model" $model "worker" $worker "router" $router "gateway" $gateway -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $file "tls" (include "tern.tlsSection" . | fromYaml) -}}
{{- end -}}
{{- if $trn2 -}}
{{- $_ := set $file "neuron" (include "tern.neuronSection" . | fromYaml) -}}
{{- end -}}
{{- toYaml $file -}}
{{- end -}}

{{/* Rolls the pods when tern.yaml changes. */}}
{{- define "tern.configChecksum" -}}
checksum/config: {{ include "tern.configYaml" . | sha256sum }}
{{- end -}}

{{- define "tern.configVolume" -}}
- name: config
  {{- if .Values.configSecret }}
  secret:
    secretName: {{ include "tern.fullname" . }}-config
  {{- else }}
  configMap:
    name: {{ include "tern.fullname" . }}-config
  {{- end }}
{{- end -}}

{{/* Where the gateway pods see the certificate of gateway.tlsSecretName (HTTPS). */}}
{{- define "tern.httpsCertFile" -}}
/etc/tern-https/tls.crt
{{- end -}}

{{/* Where the gateway pods see the API key file of gateway.apiKeySecret. */}}
{{- define "tern.apiKeyFile" -}}
/etc/tern-api-keys/keys.yaml
{{- end -}}

{{- define "tern.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "tern.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Probe timing: the keys given in a dict of periodSeconds, failureThreshold, ... */}}
{{- define "tern.probeTiming" -}}
{{- $lines := list -}}
{{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" -}}
{{- if hasKey $ $key -}}
{{- $lines = append $lines (printf "%s: %d" $key (index $ $key | int)) -}}
{{- end -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{/* A native gRPC health probe (grpc.health.v1.Health, overall status): tern.grpcProbe (dict "port" N "timing" dict). */}}
{{- define "tern.grpcProbe" -}}
{{- if .tls }}
{{- /* The kubelet's gRPC probe speaks plaintext only: under tls.enabled the
       port is probed for a listening socket instead. */}}
tcpSocket:
  port: {{ .port | int }}
{{- else }}
grpc:
  port: {{ .port | int }}
{{- end }}
{{ include "tern.probeTiming" .timing }}
{{- end -}}

{{/* Mutual TLS between the tiers: where the pods see tls.secretName. */}}
{{- define "tern.tlsDir" -}}
/etc/tern-tls
{{- end -}}

{{- define "tern.tlsSecretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "tern.fullname" .)) -}}
{{- end -}}

{{/*
tern.yaml's tls section. Workers are dialled by pod IP (router.workers is a
dns: entry), which no certificate names, so every hop checks the name
tls.serverName (default: the workers' Service) instead of the host it dials;
the one certificate of tls.secretName carries it with the other Services.
*/}}
{{- define "tern.tlsSection" -}}
ca_file: {{ include "tern.tlsDir" . }}/ca.crt
cert_file: {{ include "tern.tlsDir" . }}/tls.crt
key_file: {{ include "tern.tlsDir" . }}/tls.key
server_name_override: {{ .Values.tls.serverName | default (include "tern.serviceHost" (dict "root" . "component" "worker")) }}
{{- end -}}

{{/* The DNS names the shared certificate carries: each tier's Service, short to fully qualified. */}}
{{- define "tern.tlsDnsNames" -}}
{{- $names := list -}}
{{- range $component := list "gateway" "router" "worker" -}}
{{- $service := include "tern.component" (dict "root" $ "component" $component) -}}
{{- $names = concat $names (list $service (printf "%s.%s" $service $.Release.Namespace) (printf "%s.%s.svc" $service $.Release.Namespace) (include "tern.serviceHost" (dict "root" $ "component" $component))) -}}
{{- end -}}
{{- with .Values.tls.serverName }}{{ $names = append $names . }}{{ end -}}
{{- toJson ($names | uniq) -}}
{{- end -}}

{{- define "tern.tlsVolumeMount" -}}
- name: tls
  mountPath: {{ include "tern.tlsDir" . }}
  readOnly: true
{{- end -}}

{{/* The Secret's folder, so a renewal (an atomic swap of it) reaches the
     running binaries, which read the files again every minute. */}}
{{- define "tern.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ include "tern.tlsSecretName" . }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end -}}

{{/* Preferred spreading of a tier's replicas over nodes, unless affinity is set. */}}
{{- define "tern.affinity" -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "tern.selectorLabels" (dict "root" .root "component" .component) | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* The init container that writes the demo model: tern.demoModelInit (dict "root" $). */}}
{{- define "tern.demoModelInit" -}}
{{- $root := .root -}}
- name: demo-model
  image: {{ include "tern.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    - /usr/local/bin/tern
    - model
    - synth
    - --preset
    - {{ $root.Values.model.demo.preset | quote }}
    - --seed
    - {{ $root.Values.model.demo.seed | int | quote }}
    - --out
    - {{ include "tern.modelPath" $root | quote }}
    {{- with $root.Values.model.demo.tokenizerDir }}
    - --tokenizer-dir
    - {{ . | quote }}
    {{- end }}
    - --no-gguf
  securityContext:
    {{- include "tern.containerSecurityContext" $root | nindent 4 }}
  resources:
    {{- toYaml $root.Values.model.demo.resources | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ $root.Values.model.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* The model volume of gateway and worker pods. */}}
{{- define "tern.modelVolume" -}}
- name: model
  {{- if eq .Values.model.source "demo" }}
  emptyDir:
    sizeLimit: {{ .Values.model.demo.sizeLimit }}
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: true
  {{- end }}
{{- end -}}

{{/*
The worker's gRPC ports, a JSON array: worker.grpcPort on cpu; on trn2 one
per vLLM server (engine i on worker.grpcPort + i), each a routable worker.
*/}}
{{- define "tern.workerGrpcPorts" -}}
{{- $ports := list (int .Values.worker.grpcPort) -}}
{{- if eq .Values.profile "trn2" -}}
{{- $ports = list -}}
{{- range $server := (include "tern.neuron" . | fromJson).servers -}}
{{- $ports = append $ports (int $server.engine) -}}
{{- end -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}

{{/* A worker gRPC port's name: grpc for engine 0, grpc-<i> for engine i. */}}
{{- define "tern.workerGrpcPortName" -}}
{{- if eq (int .) 0 }}grpc{{ else }}grpc-{{ . }}{{ end -}}
{{- end -}}

{{/*
tern.yaml's neuron section on trn2: config.neuron plus the keys that depend
on the pod. The servers bind 0.0.0.0 so that kubelet's probes reach them on
the pod IP (the NetworkPolicy keeps everyone else out); tern-worker dials
127.0.0.1.
*/}}
{{- define "tern.neuronSection" -}}
{{- $mount := .Values.trn2.compileCache.mountPath | trimSuffix "/" -}}
{{- toYaml (merge (dict
      "instance_type" .Values.trn2.instanceType
      "host" "0.0.0.0"
      "cache_root" (printf "%s/vllm" $mount)
      "remote_cache" (printf "%s/remote" $mount))
    (deepCopy (.Values.config.neuron | default dict))) -}}
{{- end -}}

{{/*
The vLLM Neuron servers of a trn2 worker pod, as JSON (include ... | fromJson),
derived from config.neuron exactly as `tern neuron plan` derives them
(cli/neuron/neuron_plan.cc: same argv, environment, core ranges and ports;
chart.test.mjs compares the two). Fails first, naming every broken rule, when
the values do not fit together.
*/}}
{{- define "tern.neuron" -}}
{{- include "tern.validateNeuron" . -}}
{{- $n := .Values.config.neuron -}}
{{- $section := include "tern.neuronSection" . | fromYaml -}}
{{- $lnc := int $n.lnc -}}
{{- $tp := int $n.tp -}}
{{- $logical := div 128 $lnc -}}
{{- $count := int $n.servers -}}
{{- if eq $count 0 }}{{ $count = div $logical $tp }}{{ end -}}
{{- $prefill := list -}}
{{- range $n.prefill_buckets }}{{ $prefill = append $prefill (int .) }}{{ end -}}
{{- $seqs := list -}}
{{- range $n.num_seqs_buckets }}{{ $seqs = append $seqs (int .) }}{{ end -}}
{{- if not $seqs }}{{ $seqs = list (int $n.max_num_seqs) }}{{ end -}}
{{- $modelLen := int .Values.config.model.max_model_len -}}
{{- $maxModelLen := int $n.max_model_len | default $modelLen -}}
{{- $modelPath := include "tern.modelPath" . -}}
{{- $served := .Values.config.model.served_name | default (base $modelPath) -}}
{{- $additional := printf "{\"neuron_config\":{\"kv_segment_size_buckets\":%s,\"num_batched_tokens_buckets\":%s,\"num_seqs_buckets\":%s,\"fp8_packed_kv\":%t}}" (toJson $prefill) (toJson $prefill) (toJson $seqs) $n.fp8 -}}
{{- $servers := list -}}
{{- range $i := until (int $count) -}}
{{- $port := add (int $n.port) $i -}}
{{- $events := add (int $n.kv_events_port) $i -}}
{{- $replay := add (int $n.kv_replay_port) $i -}}
{{- $cores := printf "%d-%d" (mul $i $tp) (sub (mul (add $i 1) $tp) 1) -}}
{{- $args := list $modelPath
      "--tensor-parallel-size" (toString $tp)
      "--enable-prefix-caching"
      "--max-model-len" (toString $maxModelLen)
      "--max-num-batched-tokens" (toString (last $prefill))
      "--max-num-seqs" (toString (int $n.max_num_seqs))
      "--block-size" (toString (int $n.block_size))
      "--optimization-level" (toString (int $n.optimization_level))
      "--additional-config" $additional
      "--served-model-name" $served
      "--host" $section.host
      "--port" (toString $port)
      "--kv-events-config" (printf "{\"enable_kv_cache_events\":true,\"publisher\":\"zmq\",\"endpoint\":\"tcp://*:%d\",\"replay_endpoint\":\"tcp://*:%d\"}" $events $replay) -}}
{{- range $n.extra_args }}{{ $args = append $args (toString .) }}{{ end -}}
{{- $env := list -}}
{{- if $.Values.trn2.vllm.pinCores }}{{ $env = append $env (dict "name" "NEURON_RT_VISIBLE_CORES" "value" $cores) }}{{ end -}}
{{- $env = concat $env (list
      (dict "name" "NEURON_LOGICAL_NC_CONFIG" "value" (toString $lnc))
      (dict "name" "PYTHONHASHSEED" "value" "42")
      (dict "name" "VLLM_CACHE_ROOT" "value" $section.cache_root)
      (dict "name" "VLLM_NEURON_COMPILATION_TIMEOUT" "value" "1200")
      (dict "name" "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" "value" "1200")
      (dict "name" "NEURON_LIBTORCH_REMOTE_CACHE" "value" $section.remote_cache)) -}}
{{- $url := printf "http://127.0.0.1:%d" $port -}}
{{- $eventsAt := printf "tcp://127.0.0.1:%d" $events -}}
{{- $replayAt := printf "tcp://127.0.0.1:%d" $replay -}}
{{- $servers = append $servers (dict
      "index" $i
      "name" (printf "vllm-%d" $i)
      "port" $port
      "engine" (add (int $.Values.worker.grpcPort) $i)
      "cores" $cores
      "args" $args
      "env" $env
      "spec" (printf "%s,events=%s,replay=%s,model=%s" $url $eventsAt $replayAt $served)) -}}
{{- end -}}
{{- toJson (dict
      "servers" $servers
      "tp" $tp
      "lnc" $lnc
      "logicalCores" $logical
      "devicesPerServer" (div (mul $tp $lnc) 8)
      "servedName" $served) -}}
{{- end -}}

{{/*
The rules `tern neuron plan` applies to the neuron section (the plan runs
again in each pod's init container, where it also reads the checkpoint),
plus what the pod adds: whole devices per container, ports that do not clash
with tern-worker's, probes that outlast a cold compile. Fails once, listing
every broken rule.
*/}}
{{- define "tern.validateNeuron" -}}
{{- $n := .Values.config.neuron | default dict -}}
{{- $problems := list -}}
{{- if ne .Values.trn2.instanceType "trn2.48xlarge" -}}
{{- $problems = append $problems (printf "trn2.instanceType %q is not supported: only trn2.48xlarge (16 devices x 8 physical NeuronCores), as `tern neuron plan`" .Values.trn2.instanceType) -}}
{{- end -}}
{{- $lnc := int $n.lnc -}}
{{- $logical := 0 -}}
{{- if or (eq $lnc 1) (eq $lnc 2) -}}
{{- $logical = div 128 $lnc -}}
{{- else -}}
{{- $problems = append $problems (printf "config.neuron.lnc must be 1 or 2, got %d" $lnc) -}}
{{- end -}}
{{- $tp := int $n.tp -}}
{{- $servers := int $n.servers -}}
{{- $count := 0 -}}
{{- if le $tp 0 -}}
{{- $problems = append $problems (printf "config.neuron.tp must be positive, got %d" $tp) -}}
{{- else if gt $logical 0 -}}
{{- if and (eq $servers 0) (ne (mod $logical $tp) 0) -}}
{{- $problems = append $problems (printf "config.neuron.tp %d does not divide the %d logical NeuronCores of a trn2.48xlarge at config.neuron.lnc %d" $tp $logical $lnc) -}}
{{- else if and (ne $servers 0) (ne (mul $servers $tp) $logical) -}}
{{- $problems = append $problems (printf "config.neuron.servers x config.neuron.tp must equal the %d logical NeuronCores of a trn2.48xlarge at config.neuron.lnc %d, got %d x %d = %d" $logical $lnc $servers $tp (mul $servers $tp)) -}}
{{- else -}}
{{- $count = ternary $servers (div $logical $tp) (ne $servers 0) -}}
{{- end -}}
{{- if ne (mod (mul $tp $lnc) 8) 0 -}}
{{- $problems = append $problems (printf "each vLLM container requests whole Neuron devices (aws.amazon.com/neuron, 8 physical NeuronCores each): config.neuron.tp %d at config.neuron.lnc %d uses %d physical cores" $tp $lnc (mul $tp $lnc)) -}}
{{- end -}}
{{- end -}}
{{- $block := int $n.block_size -}}
{{- if le $block 0 }}{{ $problems = append $problems (printf "config.neuron.block_size must be positive, got %d" $block) }}{{ end -}}
{{- $prefill := list -}}
{{- range $n.prefill_buckets }}{{ $prefill = append $prefill (int .) }}{{ end -}}
{{- $ascending := gt (len $prefill) 0 -}}
{{- $previous := 0 -}}
{{- range $prefill }}{{ if le . $previous }}{{ $ascending = false }}{{ end }}{{ $previous = . }}{{ end -}}
{{- if not $ascending -}}
{{- $problems = append $problems (printf "config.neuron.prefill_buckets must be a non-empty ascending list of positive sizes, got %s" (toJson $prefill)) -}}
{{- else -}}
{{- range $prefill -}}
{{- if or (lt . 512) (gt . 8192) -}}
{{- $problems = append $problems (printf "config.neuron.prefill_buckets entry %d is outside 512-8192 (they are also the KV segment sizes)" .) -}}
{{- else if and (gt $block 0) (ne (mod . $block) 0) -}}
{{- $problems = append $problems (printf "config.neuron.prefill_buckets entry %d is not divisible by config.neuron.block_size %d" . $block) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $lastPrefill := 0 -}}
{{- if $prefill }}{{ $lastPrefill = last $prefill }}{{ end -}}
{{- $segments := list -}}
{{- range $n.kv_segment_size_buckets }}{{ $segments = append $segments (int .) }}{{ end -}}
{{- if and $segments (ne (toJson $segments) (toJson $prefill)) -}}
{{- $problems = append $problems (printf "config.neuron.kv_segment_size_buckets %s must equal config.neuron.prefill_buckets %s (leave it empty to derive it)" (toJson $segments) (toJson $prefill)) -}}
{{- end -}}
{{- $batched := int $n.max_num_batched_tokens -}}
{{- if and (ne $batched 0) (ne $batched $lastPrefill) -}}
{{- $problems = append $problems (printf "config.neuron.max_num_batched_tokens %d must equal the last of config.neuron.prefill_buckets %s (leave it 0 to derive it)" $batched (toJson $prefill)) -}}
{{- end -}}
{{- $maxSeqs := int $n.max_num_seqs -}}
{{- if le $maxSeqs 0 }}{{ $problems = append $problems (printf "config.neuron.max_num_seqs must be positive, got %d" $maxSeqs) }}{{ end -}}
{{- $seqs := list -}}
{{- range $n.num_seqs_buckets }}{{ $seqs = append $seqs (int .) }}{{ end -}}
{{- if not $seqs }}{{ $seqs = list $maxSeqs }}{{ end -}}
{{- $ascending = true -}}
{{- $previous = 0 -}}
{{- range $seqs }}{{ if le . $previous }}{{ $ascending = false }}{{ end }}{{ $previous = . }}{{ end -}}
{{- if not $ascending -}}
{{- $problems = append $problems (printf "config.neuron.num_seqs_buckets must be an ascending list of positive sizes, got %s" (toJson $seqs)) -}}
{{- else if and (gt $maxSeqs 0) (lt (last $seqs) $maxSeqs) -}}
{{- $problems = append $problems (printf "config.neuron.num_seqs_buckets %s must cover config.neuron.max_num_seqs %d: its last entry is smaller" (toJson $seqs) $maxSeqs) -}}
{{- end -}}
{{- $modelLen := int (.Values.config.model | default dict).max_model_len -}}
{{- $neuronLen := int $n.max_model_len -}}
{{- if le $modelLen 0 -}}
{{- $problems = append $problems "profile trn2 needs config.model.max_model_len: it is the gateway's context limit, and the servers' --max-model-len is derived from it" -}}
{{- else if and (ne $neuronLen 0) (lt $neuronLen $modelLen) -}}
{{- $problems = append $problems (printf "config.neuron.max_model_len %d is below config.model.max_model_len %d, the longest prompt + completion the gateway admits" $neuronLen $modelLen) -}}
{{- end -}}
{{- $derived := list "--tensor-parallel-size" "--enable-prefix-caching" "--max-model-len" "--max-num-batched-tokens" "--max-num-seqs" "--block-size" "--optimization-level" "--additional-config" "--served-model-name" "--host" "--port" "--kv-events-config" "--model" "--data-parallel-size" -}}
{{- range $n.extra_args -}}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" -}}
{{- if has $flag (list "--quantization" "-q") -}}
{{- $problems = append $problems (printf "config.neuron.extra_args must not pass %s: the checkpoint selects FP8 (set config.neuron.fp8 instead)" $flag) -}}
{{- else if has $flag $derived -}}
{{- $problems = append $problems (printf "config.neuron.extra_args must not pass %s: the chart derives it from the other keys" $flag) -}}
{{- end -}}
{{- end -}}
{{- /* Ports: each server uses base + i of every range; none may meet another or tern-worker's. */ -}}
{{- $span := max $count 1 -}}
{{- $ranges := list
      (list "config.neuron.port" (int $n.port))
      (list "config.neuron.kv_events_port" (int $n.kv_events_port))
      (list "config.neuron.kv_replay_port" (int $n.kv_replay_port))
      (list "worker.grpcPort" (int .Values.worker.grpcPort)) -}}
{{- range $ranges -}}
{{- $base := index . 1 -}}
{{- if or (le $base 0) (gt (add $base $span -1) 65535) -}}
{{- $problems = append $problems (printf "%s %d leaves no valid port for each of the %d servers (1-65535; server i uses base + i)" (index . 0) $base $span) -}}
{{- end -}}
{{- end -}}
{{- range $a, $first := $ranges -}}
{{- range $b, $second := $ranges -}}
{{- if and (lt $a $b) (le (index $first 1) (add (index $second 1) $span -1)) (le (index $second 1) (add (index $first 1) $span -1)) -}}
{{- $problems = append $problems (printf "the port ranges of %s and %s overlap across the %d servers (server i uses base + i)" (index $first 0) (index $second 0) $span) -}}
{{- end -}}
{{- end -}}
{{- $metrics := int $.Values.worker.metricsPort -}}
{{- if and (ge $metrics (index $first 1)) (le $metrics (add (index $first 1) $span -1)) -}}
{{- $problems = append $problems (printf "worker.metricsPort %d falls in the port range of %s (%d servers)" $metrics (index $first 0) $span) -}}
{{- end -}}
{{- end -}}
{{- $reserved := list "NEURON_RT_VISIBLE_CORES" "NEURON_LOGICAL_NC_CONFIG" "PYTHONHASHSEED" "VLLM_CACHE_ROOT" "VLLM_NEURON_COMPILATION_TIMEOUT" "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" "NEURON_LIBTORCH_REMOTE_CACHE" "HOME" -}}
{{- range .Values.trn2.vllm.env -}}
{{- if has .name $reserved -}}
{{- $problems = append $problems (printf "trn2.vllm.env must not set %s: the chart derives it (as `tern neuron plan`)" .name) -}}
{{- end -}}
{{- end -}}
{{- range $what, $probes := dict "trn2.vllm.probes.startup" .Values.trn2.vllm.probes.startup "trn2.worker.probes.startup" .Values.trn2.worker.probes.startup -}}
{{- $budget := mul (int $probes.periodSeconds) (int $probes.failureThreshold) -}}
{{- if lt $budget 1200 -}}
{{- $problems = append $problems (printf "%s allows %d s (periodSeconds x failureThreshold): a cold 70B compile takes 15-20 min per server, allow at least 1200" $what $budget) -}}
{{- end -}}
{{- end -}}
{{- if $problems -}}
{{- fail (printf "profile trn2: the values break %d rule(s):\n  %s" (len $problems) (join "\n  " $problems)) -}}
{{- end -}}
{{- end -}}

{{/*
Value combinations the schema cannot express. Included by the config object,
which every install renders.
*/}}
{{- define "tern.validate" -}}
{{- if eq .Values.profile "trn2" -}}
{{- if ne .Values.model.source "pvc" -}}
{{- fail "profile trn2 needs model.source=pvc (the demo model is for the cpu profile)" -}}
{{- end -}}
{{- if not (and .Values.trn2.vllm.image.repository .Values.trn2.vllm.image.tag) -}}
{{- fail "profile trn2 needs trn2.vllm.image.repository and trn2.vllm.image.tag (a vLLM Neuron image)" -}}
{{- end -}}
{{- if not (or .Values.trn2.compileCache.claimName .Values.trn2.compileCache.create) -}}
{{- fail "profile trn2 needs a shared compile cache: trn2.compileCache.claimName (an existing ReadWriteMany claim) or trn2.compileCache.create=true" -}}
{{- end -}}
{{- include "tern.validateNeuron" . -}}
{{- end -}}
{{- if and (eq .Values.model.source "pvc") (not (and .Values.model.pvc.claimName .Values.model.pvc.dir)) -}}
{{- fail "model.source=pvc needs model.pvc.claimName and model.pvc.dir (the model's folder inside the claim)" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.enabled needs tls.secretName (a Secret with ca.crt, tls.crt and tls.key) or tls.certManager.issuerRef.name (cert-manager issues it)" -}}
{{- end -}}
{{- $drain := int .Values.worker.drainTimeoutSeconds -}}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) $drain -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must exceed worker.drainTimeoutSeconds (%d), or draining workers are killed" (int .Values.worker.terminationGracePeriodSeconds) $drain) -}}
{{- end -}}
{{- $liveness := .Values.worker.probes.liveness -}}
{{- if eq .Values.profile "trn2" }}{{ $liveness = .Values.trn2.worker.probes.liveness }}{{ end -}}
{{- if le (mul (int $liveness.periodSeconds) (int $liveness.failureThreshold)) $drain -}}
{{- fail (printf "the worker's liveness probe gives up after %d s, within worker.drainTimeoutSeconds (%d): a draining worker reports NOT_SERVING and would be restarted; raise its failureThreshold" (mul (int $liveness.periodSeconds) (int $liveness.failureThreshold)) $drain) -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy rules: egress to the cluster DNS, ingress from Prometheus to the metrics port. */}}
{{- define "tern.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dnsTo | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{- define "tern.metricsIngress" -}}
- from:
    {{- toYaml .Values.networkPolicy.prometheusFrom | nindent 4 }}
  ports:
    - port: metrics
      protocol: TCP
{{- end -}}
