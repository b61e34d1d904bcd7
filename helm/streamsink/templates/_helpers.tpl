{{/*
Names and labels shared by every template. Kubernetes names are DNS labels:
everything is truncated to 63 characters without a trailing dash.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "streamsink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or fullnameOverride; just the release when it already contains the chart name. */}}
{{- define "streamsink.fullname" -}}
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

{{/* "<fullname>-<component>", for objects the chart has more than one of. Usage: include "streamsink.componentName" (list . "kafka") */}}
{{- define "streamsink.componentName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "streamsink.fullname" $root | trunc (int (sub 62 (len $component)))) $component | trimSuffix "-" -}}
{{- end -}}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "streamsink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the worker pods; never change them on upgrade. */}}
{{- define "streamsink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamsink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{/* The standard app.kubernetes.io labels without the component. */}}
{{- define "streamsink.commonLabels" -}}
helm.sh/chart: {{ include "streamsink.chart" . }}
app.kubernetes.io/name: {{ include "streamsink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: streamsink
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The labels of the objects of the worker component. */}}
{{- define "streamsink.labels" -}}
{{ include "streamsink.commonLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "streamsink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamsink.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: repository@digest, or repository:tag with the tag defaulting to appVersion. Usage: include "streamsink.image" (list .Values.image .Chart) */}}
{{- define "streamsink.image" -}}
{{- $image := index . 0 -}}
{{- $chart := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the Kafka SASL credentials (the chart's or existingSecret). */}}
{{- define "streamsink.kafkaSecretName" -}}
{{- default (include "streamsink.componentName" (list . "kafka")) .Values.kafka.sasl.existingSecret -}}
{{- end -}}

{{/* The Secret holding the Redis password (the chart's or existingSecret). */}}
{{- define "streamsink.redisSecretName" -}}
{{- default (include "streamsink.componentName" (list . "redis")) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{/* The Secret holding the tenants file, JWT public key and peer secret (the chart's or existingSecret). */}}
{{- define "streamsink.authSecretName" -}}
{{- default (include "streamsink.componentName" (list . "auth")) .Values.security.auth.existingSecret -}}
{{- end -}}

{{/* Comma-separated bootstrap brokers. */}}
{{- define "streamsink.kafkaBrokers" -}}
{{- join "," .Values.kafka.brokers -}}
{{- end -}}

{{/* The most workers worth running: each needs an input partition to own anything. */}}
{{- define "streamsink.maxReplicas" -}}
{{- min (int .Values.autoscaling.maxReplicas) (int .Values.kafka.partitions) -}}
{{- end -}}

{{/* Seconds the worker gets for its own graceful stop: the pod's grace minus the preStop sleep and a margin for exit. */}}
{{- define "streamsink.shutdownGraceMs" -}}
{{- $w := .Values.worker -}}
{{- mul (max 1 (sub (sub (int $w.terminationGracePeriodSeconds) (int $w.preStopSleepSeconds)) 10)) 1000 -}}
{{- end -}}

{{/*
Checks across values that the schema cannot express; rendering fails with a
message naming the values to change.
*/}}
{{- define "streamsink.validate" -}}
{{- $v := .Values -}}
{{- $replicas := int $v.worker.replicaCount -}}
{{- if and (empty $v.kafka.brokers) (or (gt $replicas 1) $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled) -}}
{{- fail "streamsink: more than one worker (worker.replicaCount > 1 or an autoscaler) needs Kafka: set kafka.brokers, or run one embedded worker" -}}
{{- end -}}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled -}}
{{- fail "streamsink: enable one autoscaler: autoscaling.keda.enabled or autoscaling.hpa.enabled, not both" -}}
{{- end -}}
{{- if gt (int $v.autoscaling.minReplicas) (int (include "streamsink.maxReplicas" .)) -}}
{{- fail (printf "streamsink: autoscaling.minReplicas (%d) is above the most workers that can own a partition (min of autoscaling.maxReplicas and kafka.partitions = %s)" (int $v.autoscaling.minReplicas) (include "streamsink.maxReplicas" .)) -}}
{{- end -}}
{{- if and $v.kafka.sasl.enabled (not $v.kafka.sasl.existingSecret) (or (not $v.kafka.sasl.username) (not $v.kafka.sasl.password)) -}}
{{- fail "streamsink: kafka.sasl.enabled needs kafka.sasl.username and kafka.sasl.password, or kafka.sasl.existingSecret" -}}
{{- end -}}
{{- if and $v.redis.auth.enabled (not $v.redis.url) -}}
{{- fail "streamsink: redis.auth.enabled needs redis.url" -}}
{{- end -}}
{{- if and $v.redis.auth.enabled (not $v.redis.auth.existingSecret) (not $v.redis.auth.password) -}}
{{- fail "streamsink: redis.auth.enabled needs redis.auth.password or redis.auth.existingSecret" -}}
{{- end -}}
{{- if and $v.redis.tlsCaSecret $v.redis.url (not (hasPrefix "rediss://" $v.redis.url)) -}}
{{- fail "streamsink: redis.tlsCaSecret needs a rediss:// redis.url" -}}
{{- end -}}
{{- $sec := $v.security -}}
{{- if and $sec.grpcTls.enabled (not $sec.grpcTls.secretName) -}}
{{- fail "streamsink: security.grpcTls.enabled needs security.grpcTls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- if and $sec.auth.enabled (not $sec.auth.existingSecret) (empty $sec.auth.tenants.tokens) (not $sec.auth.jwt.enabled) -}}
{{- fail "streamsink: security.auth.enabled needs tokens in security.auth.tenants.tokens, security.auth.jwt.enabled, or security.auth.existingSecret" -}}
{{- end -}}
{{- if and $sec.auth.jwt.enabled (or (not $sec.auth.jwt.issuer) (not $sec.auth.jwt.audience)) -}}
{{- fail "streamsink: security.auth.jwt.enabled needs security.auth.jwt.issuer and security.auth.jwt.audience" -}}
{{- end -}}
{{- if and $sec.auth.jwt.enabled (not $sec.auth.existingSecret) (not $sec.auth.jwt.publicKey) -}}
{{- fail "streamsink: security.auth.jwt.enabled needs security.auth.jwt.publicKey (or security.auth.existingSecret)" -}}
{{- end -}}
{{- if and $sec.auth.enabled $v.kafka.brokers (not $sec.auth.existingSecret) (lt (len $sec.auth.peerSecret) 16) -}}
{{- fail "streamsink: security.auth with Kafka needs security.auth.peerSecret (16+ characters) so forwarded calls prove their tenant, or security.auth.existingSecret" -}}
{{- end -}}
{{- if le (int $v.worker.terminationGracePeriodSeconds) (add (int $v.worker.preStopSleepSeconds) 10) -}}
{{- fail "streamsink: worker.terminationGracePeriodSeconds must exceed worker.preStopSleepSeconds + 10, or the worker has no time to hand its sessions over" -}}
{{- end -}}
{{- end -}}

{{/* Kafka SASL credentials as container env, from the chart's Secret or existingSecret. */}}
{{- define "streamsink.kafkaSaslEnv" -}}
{{- if and .Values.kafka.brokers .Values.kafka.sasl.enabled -}}
- name: STREAMSINK_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "streamsink.kafkaSecretName" . }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: STREAMSINK_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "streamsink.kafkaSecretName" . }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end -}}
{{- end -}}

{{/*
How the kubelet probes the worker: the gRPC health service in plaintext, or,
with gRPC TLS (kubelet gRPC probes cannot speak TLS), that the port accepts
connections; the worker binds it only once its model is loaded.
*/}}
{{- define "streamsink.grpcProbe" -}}
{{- if .Values.security.grpcTls.enabled -}}
tcpSocket:
  port: grpc
{{- else -}}
grpc:
  port: {{ .Values.worker.grpcPort }}
{{- end -}}
{{- end -}}
