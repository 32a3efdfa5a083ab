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
caller_rate_per_second = {{ $c.limits.caller_rate_per_second | int64 }}
caller_burst = {{ $c.limits.caller_burst | int64 }}
max_watch_streams_per_caller = {{ $c.limits.max_watch_streams_per_caller | int64 }}

[store]
max_batch = {{ $c.store.max_batch | int64 }}
queue_depth = {{ $c.store.queue_depth | int64 }}
readers = {{ $c.store.readers | int64 }}
sqlite_mmap_mib = {{ $c.store.sqlite_mmap_mib | int64 }}
statement_timeout_seconds = {{ $c.store.statement_timeout_seconds | int64 }}
idle_in_transaction_timeout_seconds = {{ $c.store.idle_in_transaction_timeout_seconds | int64 }}
acquire_timeout_seconds = {{ $c.store.acquire_timeout_seconds | int64 }}
encoded_ticket_cache_mib = {{ $c.store.encoded_ticket_cache_mib | int64 }}

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
request_timeout_seconds = {{ $c.sync.request_timeout_seconds | int64 }}
connect_timeout_seconds = {{ $c.sync.connect_timeout_seconds | int64 }}
token_request_timeout_ms = {{ $c.sync.token_request_timeout_ms | int64 }}
token_hedge_delay_ms = {{ $c.sync.token_hedge_delay_ms | int64 }}
hedge_delay_ms = {{ $c.sync.hedge_delay_ms | int64 }}
standby_tokens = {{ $c.sync.standby_tokens | int64 }}

[satisfaction]
quiet_period_days = {{ $c.satisfaction.quiet_period_days | int64 }}
max_call_attempts = {{ $c.satisfaction.max_call_attempts | int64 }}

[privacy]
anonymise_closed_after_years = {{ $c.privacy.anonymise_closed_after_years | int64 }}

[telemetry]
{{- with $c.telemetry.otlp_endpoint }}
otlp_endpoint = {{ . | toJson }}
{{- end }}
service_name = {{ $c.telemetry.service_name | toJson }}
{{- /* A TOML float needs its point: 1 would be an integer. */}}
{{- $ratio := $c.telemetry.sample_ratio | float64 | toString }}
sample_ratio = {{ $ratio }}{{ if not (regexMatch "[.eE]" $ratio) }}.0{{ end }}
{{- /* Strings go through toJson: a JSON string is a valid TOML basic string. */}}
{{- $jwt := .Values.auth.jwt }}
{{- if $jwt.keys }}

[auth.jwt]
issuer = {{ $jwt.issuer | toJson }}
audience = {{ $jwt.audience | toJson }}
leeway_seconds = {{ $jwt.leewaySeconds | int64 }}
{{- range $jwt.keys }}

[[auth.jwt.keys]]
kid = {{ .kid | toJson }}
algorithm = {{ .algorithm | toJson }}
public_key_file = {{ printf "%s/%s.pem" (include "balagh.jwtDir" $) .kid | toJson }}
{{- end }}
{{- end }}
{{- range .Values.auth.certificateCallers }}

[[auth.certificate_callers]]
subject = {{ .subject | toJson }}
id = {{ .id | toJson }}
role = {{ .role | toJson }}
{{- with .directorate }}
directorate = {{ . | toJson }}
{{- end }}
{{- with .outlets }}
outlets = {{ . | toJson }}
{{- end }}
{{- end }}
{{- with .Values.tls }}
{{- if .existingSecret }}

[tls]
cert_file = {{ printf "%s/tls.crt" (include "balagh.tlsDir" $) | toJson }}
key_file = {{ printf "%s/tls.key" (include "balagh.tlsDir" $) | toJson }}
{{- if .clientCaSecret }}
client_ca_file = {{ printf "%s/ca.crt" (include "balagh.tlsDir" $) | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the JWT public keys (auth.jwt.keysSecret) and the TLS files are mounted, read-only. */}}
{{- define "balagh.jwtDir" -}}
/etc/balagh/jwt
{{- end }}
{{- define "balagh.tlsDir" -}}
/etc/balagh/tls
{{- end }}

{{/* "true" when this Deployment runs the gRPC API (components "all" or naming grpc), else "". */}}
{{- define "balagh.grpc" -}}
{{- if or (eq .Values.components "all") (has "grpc" (splitList "," .Values.components)) }}true{{ end }}
{{- end }}

{{/*
Authentication, checked as balagh checks it at start: balagh refuses to listen on 0.0.0.0
without [auth], so a release running gRPC without it would crash-loop. Half-configured parts
are refused too, with what is missing. The "required" (rather than "fail") for the missing
authentication keeps `helm lint` of the bare defaults an INFO, like database.existingSecret.
*/}}
{{- define "balagh.checkAuth" -}}
{{- $jwt := .Values.auth.jwt }}
{{- $callers := .Values.auth.certificateCallers }}
{{- $tls := .Values.tls }}
{{- $missing := list }}
{{- if not $jwt.issuer }}{{ $missing = append $missing "auth.jwt.issuer" }}{{ end }}
{{- if not $jwt.audience }}{{ $missing = append $missing "auth.jwt.audience" }}{{ end }}
{{- if not $jwt.keysSecret }}{{ $missing = append $missing "auth.jwt.keysSecret" }}{{ end }}
{{- if not $jwt.keys }}{{ $missing = append $missing "auth.jwt.keys (at least one {kid, algorithm})" }}{{ end }}
{{- $jwtOn := empty $missing }}
{{- if and (not $jwtOn) (or $jwt.issuer $jwt.audience $jwt.keysSecret $jwt.keys) }}
{{- fail (printf "auth.jwt is half configured: bearer tokens need issuer, audience, keysSecret and at least one key; missing %s" (join ", " $missing)) }}
{{- end }}
{{- $kids := list }}
{{- range $jwt.keys }}
{{- if has .kid $kids }}
{{- fail (printf "auth.jwt.keys: kid %q is named twice" .kid) }}
{{- end }}
{{- $kids = append $kids .kid }}
{{- end }}
{{- if and $tls.clientCaSecret (not $tls.existingSecret) }}
{{- fail "tls.clientCaSecret needs tls.existingSecret: mutual TLS needs the server's own certificate (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and $callers (not $tls.clientCaSecret) }}
{{- fail "auth.certificateCallers need mutual TLS: set tls.existingSecret (a kubernetes.io/tls Secret with the server's certificate) and tls.clientCaSecret (the CA that signs the callers' certificates)" }}
{{- end }}
{{- $subjects := list }}
{{- range $callers }}
{{- $scoped := has .role (list "liaison_officer" "specialist") }}
{{- if and $scoped (not .directorate) }}
{{- fail (printf "auth.certificateCallers %q: role %s needs a directorate" .id .role) }}
{{- end }}
{{- if and (not $scoped) .directorate }}
{{- fail (printf "auth.certificateCallers %q: a directorate is for liaison_officer and specialist only, not %s" .id .role) }}
{{- end }}
{{- if and .outlets (ne .role "specialist") }}
{{- fail (printf "auth.certificateCallers %q: outlets are for specialists only, not %s" .id .role) }}
{{- end }}
{{- if has .subject $subjects }}
{{- fail (printf "auth.certificateCallers: subject %q is registered twice" .subject) }}
{{- end }}
{{- $subjects = append $subjects .subject }}
{{- end }}
{{- if include "balagh.grpc" . }}
{{- $ok := or $jwtOn (not (empty $callers)) }}
{{- $_ := required (printf "authentication is required: components %q runs the gRPC API, and balagh refuses to listen on 0.0.0.0:%s without [auth] (docs/security.md). Configure bearer tokens (auth.jwt.issuer, auth.jwt.audience, auth.jwt.keysSecret and auth.jwt.keys) or certificate callers (auth.certificateCallers with tls.existingSecret and tls.clientCaSecret); a release without grpc (components: sync,scheduler) needs neither" .Values.components (include "balagh.grpcPort" .)) (ternary "yes" "" $ok) }}
{{- end }}
{{- end }}
