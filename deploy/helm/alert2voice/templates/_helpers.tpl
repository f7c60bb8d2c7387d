{{/* The release's name, the chart's when the release name already contains it; 63 characters at most. */}}
{{- define "alert2voice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selects the alert2voice pods. app.kubernetes.io/name is the ServiceMonitor's jobLabel: job="alert2voice",
which deploy/rules' alerts match. */}}
{{- define "alert2voice.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "alert2voice.labels" -}}
{{ include "alert2voice.selectorLabels" . }}
app.kubernetes.io/component: notifier
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Whether this is the highly available mode; fails on an unknown mode. */}}
{{- define "alert2voice.ha" -}}
{{- if eq .Values.mode "ha" -}}true
{{- else if ne .Values.mode "standalone" -}}
{{- fail (printf "mode: %q is neither standalone nor ha" .Values.mode) -}}
{{- end -}}
{{- end -}}

{{/* Replicas: one in standalone (SQLite has one writer), `replicas` (default 3, at least 2) in ha. */}}
{{- define "alert2voice.replicas" -}}
{{- if include "alert2voice.ha" . -}}
{{- $n := int (default 3 .Values.replicas) -}}
{{- if lt $n 2 -}}{{- fail "mode: ha needs replicas >= 2 (one replica: mode standalone)" -}}{{- end -}}
{{- $n -}}
{{- else -}}
{{- if and .Values.replicas (ne (int .Values.replicas) 1) -}}
{{- fail "mode: standalone runs one replica (the SQLite store has one writer): use mode: ha for more" -}}
{{- end -}}
1
{{- end -}}
{{- end -}}

{{/* The Secret holding the admin token: adminAuth.existingSecret, else the one the chart generates. */}}
{{- define "alert2voice.adminSecretName" -}}
{{- default (printf "%s-admin" (include "alert2voice.fullname" .)) .Values.adminAuth.existingSecret -}}
{{- end -}}

{{- define "alert2voice.configMapName" -}}
{{- default (printf "%s-config" (include "alert2voice.fullname" .)) .Values.existingConfigMap -}}
{{- end -}}

{{/* The config: values' `config` as the user gave it, with only what the chart wires added where it is unset:
the listener on containerPort, server.admin_auth from the admin token (adminAuth), the files mounted from secrets.existingSecret (unless the user's config gives
that credential another way) and `store`, derived from the mode (values' config.store merged over it). */}}
{{- define "alert2voice.config" -}}
{{- $dir := "/etc/alert2voice/secrets" -}}
{{- $config := deepCopy (default (dict) .Values.config) -}}
{{- $server := default (dict) $config.server -}}
{{- $_ := set $server "listen" (default (printf "0.0.0.0:%v" .Values.containerPort) $server.listen) -}}
{{- if not (hasKey $server "admin_auth") -}}
{{- /* The config-reloader sends the token as a basic-auth password (its URL's user:password). */ -}}
{{- $token := printf "%s/admin-token" $dir -}}
{{- $_ = set $server "admin_auth" (dict "bearer_tokens_file" $token "basic_auth" (dict "username" "config-reloader" "password_file" $token)) -}}
{{- end -}}
{{- $_ = set $config "server" $server -}}
{{- if not (hasKey $config "webhook_auth") -}}
{{- $_ = set $config "webhook_auth" (dict "bearer_tokens_file" (printf "%s/webhook-tokens" $dir)) -}}
{{- end -}}
{{- $provider := default (dict) $config.provider -}}
{{- if not (or (hasKey $provider "service_key") (hasKey $provider "service_key_file")) -}}
{{- $_ = set $provider "service_key_file" (printf "%s/webex-service-key" $dir) -}}
{{- end -}}
{{- $callback := default (dict) $provider.callback -}}
{{- $given := pick $callback "bearer_token" "bearer_token_file" "bearer_tokens" "bearer_tokens_file" "header" "hub_secret" "hub_secret_file" "allow_unauthenticated" -}}
{{- if not $given -}}
{{- $_ = set $callback "bearer_tokens_file" (printf "%s/callback-token" $dir) -}}
{{- end -}}
{{- $_ = set $provider "callback" $callback -}}
{{- $_ = set $config "provider" $provider -}}
{{- $store := dict "backend" "sqlite" "path" "/var/lib/alert2voice/alert2voice.db" -}}
{{- if include "alert2voice.ha" . -}}
{{- $store = dict "backend" "redis" "url_file" (printf "%s/redis-url" $dir) "key_prefix" .Values.redis.keyPrefix -}}
{{- end -}}
{{- $_ = set $config "store" (mergeOverwrite $store (default (dict) $config.store)) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The restricted pod security of deploy/base, for every container. */}}
{{- define "alert2voice.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
