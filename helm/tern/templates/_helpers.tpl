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
(model.path, listen addresses, the worker DNS entry, the router address).
*/}}
{{- define "tern.configYaml" -}}
{{- $config := .Values.config | default dict -}}
{{- $model := merge (dict "path" (include "tern.modelPath" .)) (deepCopy ($config.model | default dict)) -}}
{{- $worker := merge (dict
      "listen" (printf "0.0.0.0:%d" (int .Values.worker.grpcPort))
      "metrics_listen" (printf "0.0.0.0:%d" (int .Values.worker.metricsPort)))
    (deepCopy ($config.worker | default dict)) -}}
{{- $workerDns := printf "dns:%s:%d" (include "tern.serviceHost" (dict "root" . "component" "worker")) (int .Values.worker.grpcPort) -}}
{{- $router := merge (dict
      "listen" (printf "0.0.0.0:%d" (int .Values.router.grpcPort))
      "metrics_listen" (printf "0.0.0.0:%d" (int .Values.router.metricsPort))
      "workers" (list $workerDns))
    (deepCopy ($config.router | default dict)) -}}
{{- $gateway := merge (dict
      "listen" (printf "0.0.0.0:%d" (int .Values.gateway.port))
      "router" (printf "%s:%d" (include "tern.serviceHost" (dict "root" . "component" "router")) (int .Values.router.grpcPort)))
    (deepCopy ($config.gateway | default dict)) -}}
{{- toYaml (dict "model" $model "worker" $worker "router" $router "gateway" $gateway) -}}
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
grpc:
  port: {{ .port | int }}
{{ include "tern.probeTiming" .timing }}
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

{{/* Sum of aws.amazon.com/neuron limits over the vLLM server containers. */}}
{{- define "tern.trn2NeuronDevices" -}}
{{- $total := 0 -}}
{{- range .Values.trn2.vllm.servers -}}
{{- $resources := mergeOverwrite (deepCopy ($.Values.trn2.vllm.resources | default dict)) (deepCopy (.resources | default dict)) -}}
{{- $total = add $total (index ($resources.limits | default dict) "aws.amazon.com/neuron" | default 0 | int) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
Value combinations the schema cannot express. Included by the config object,
which every install renders.
*/}}
{{- define "tern.validate" -}}
{{- if eq .Values.profile "trn2" -}}
{{- if not .Values.trn2.preview -}}
{{- fail "profile trn2 is a preview: tern-worker cannot drive vLLM Neuron servers yet (the worker's vllm engine kind is still to come), so a trn2 install would not serve. Set trn2.preview=true to render it anyway, e.g. to review the manifests." -}}
{{- end -}}
{{- if ne .Values.model.source "pvc" -}}
{{- fail "profile trn2 needs model.source=pvc (the demo model is for the cpu profile)" -}}
{{- end -}}
{{- if not (and .Values.trn2.vllm.image.repository .Values.trn2.vllm.image.tag) -}}
{{- fail "profile trn2 needs trn2.vllm.image.repository and trn2.vllm.image.tag (a vLLM Neuron image)" -}}
{{- end -}}
{{- if not (or .Values.trn2.compileCache.claimName .Values.trn2.compileCache.create) -}}
{{- fail "profile trn2 needs a shared compile cache: trn2.compileCache.claimName (an existing ReadWriteMany claim) or trn2.compileCache.create=true" -}}
{{- end -}}
{{- if empty .Values.trn2.vllm.servers -}}
{{- fail "profile trn2 needs at least one entry in trn2.vllm.servers" -}}
{{- end -}}
{{- $devices := include "tern.trn2NeuronDevices" . | int -}}
{{- if ne $devices (int .Values.trn2.neuronDevices) -}}
{{- fail (printf "the trn2 worker pod must request the whole instance: the vLLM servers' aws.amazon.com/neuron limits add up to %d, trn2.neuronDevices is %d" $devices (int .Values.trn2.neuronDevices)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.model.source "pvc") (not (and .Values.model.pvc.claimName .Values.model.pvc.dir)) -}}
{{- fail "model.source=pvc needs model.pvc.claimName and model.pvc.dir (the model's folder inside the claim)" -}}
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
