{{/*
Names, labels and small pieces shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "balagh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, or RELEASE-CHART (just RELEASE when it already contains the
chart name), cut to 63 characters since some Kubernetes name fields are limited to that.
*/}}
{{- define "balagh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "balagh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "balagh.labels" -}}
helm.sh/chart: {{ include "balagh.chart" . }}
{{ include "balagh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: balagh
{{- end }}

{{/* Labels that select the pods: these never change between releases of the chart. */}}
{{- define "balagh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "balagh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "balagh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "balagh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: a digest wins over a tag; the tag defaults to appVersion. */}}
{{- define "balagh.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The database Secret's name; installing without one fails here, with the fix in the message. */}}
{{- define "balagh.databaseSecret" -}}
{{- required "database.existingSecret is required: create a Secret holding the PostgreSQL URL (kubectl create secret generic balagh-database --from-literal=url=postgres://USER:PASSWORD@HOST:5432/DB) and pass --set database.existingSecret=balagh-database" .Values.database.existingSecret }}
{{- end }}

{{/* The gRPC port the container listens on (fixed: --listen 0.0.0.0:50051). */}}
{{- define "balagh.grpcPort" -}}
50051
{{- end }}

{{/* The rendered balagh.toml; its checksum rolls the pods when it changes. */}}
{{- define "balagh.configToml" -}}
{{- $c := .Values.config -}}
# balagh.toml, rendered by the balagh chart from .Values.config (see docs/operations.md).
# listen, database_url and log_format come from flags and the environment instead.
request_id_retention_hours = {{ $c.request_id_retention_hours | int64 }}

[limits]
max_message_bytes = {{ $c.limits.max_message_bytes | int64 }}
request_timeout_seconds = {{ $c.limits.request_timeout_seconds | int64 }}
max_concurrent_streams = {{ $c.limits.max_concurrent_streams | int64 }}
http2_keepalive_interval_seconds = {{ $c.limits.http2_keepalive_interval_seconds | int64 }}
max_in_flight = {{ $c.limits.max_in_flight | int64 }}

[store]
max_batch = {{ $c.store.max_batch | int64 }}
queue_depth = {{ $c.store.queue_depth | int64 }}
readers = {{ $c.store.readers | int64 }}

[watch]
retention_days = {{ $c.watch.retention_days | int64 }}
heartbeat_seconds = {{ $c.watch.heartbeat_seconds | int64 }}
send_timeout_seconds = {{ $c.watch.send_timeout_seconds | int64 }}
stream_buffer = {{ $c.watch.stream_buffer | int64 }}
ring_capacity = {{ $c.watch.ring_capacity | int64 }}
max_snapshot_tickets = {{ $c.watch.max_snapshot_tickets | int64 }}

[sla]
enabled = {{ $c.sla.enabled }}
sweep_interval_seconds = {{ $c.sla.sweep_interval_seconds | int64 }}

[sync]
lease_seconds = {{ $c.sync.lease_seconds | int64 }}
concurrency = {{ $c.sync.concurrency | int64 }}

[satisfaction]
quiet_period_days = {{ $c.satisfaction.quiet_period_days | int64 }}
max_call_attempts = {{ $c.satisfaction.max_call_attempts | int64 }}
{{- end }}
