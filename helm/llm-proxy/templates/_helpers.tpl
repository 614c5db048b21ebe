{{/*
llm-proxy.name is the chart name, overridable with nameOverride.
*/}}
{{- define "llm-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
llm-proxy.fullname is the base name of every object: fullnameOverride, or
the release name, suffixed with the chart name unless it already contains it.
*/}}
{{- define "llm-proxy.fullname" -}}
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

{{- define "llm-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
llm-proxy.commonLabels are the labels of every object, without a component.
*/}}
{{- define "llm-proxy.commonLabels" -}}
helm.sh/chart: {{ include "llm-proxy.chart" . }}
app.kubernetes.io/name: {{ include "llm-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "llm-proxy.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-proxy
{{- end }}

{{/*
llm-proxy.labels are the labels of the proxy's objects. The migration Job
and the test pod use commonLabels with their own component instead.
*/}}
{{- define "llm-proxy.labels" -}}
{{ include "llm-proxy.commonLabels" . }}
app.kubernetes.io/component: proxy
{{- end }}

{{/*
llm-proxy.selectorLabels select the proxy pods only: the component keeps
the migration Job's and the test's pods out of the Service and the PDB.
*/}}
{{- define "llm-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end }}

{{- define "llm-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llm-proxy.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "llm-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "llm-proxy.imageTag" .) }}
{{- end }}

{{/*
llm-proxy.sqlite is "true" when the proxy runs on SQLite: no database
settings at all, or a sqlite URL.
*/}}
{{- define "llm-proxy.sqlite" -}}
{{- if and (not .Values.database.existingSecret) (or (not .Values.database.url) (hasPrefix "sqlite" .Values.database.url)) -}}
true
{{- end }}
{{- end }}

{{/*
llm-proxy.migrationJob is "true" when the migration hook Job is rendered:
migrations enabled on PostgreSQL. The replicas then start with
DATABASE_AUTO_MIGRATE=false.
*/}}
{{- define "llm-proxy.migrationJob" -}}
{{- if and .Values.migrations.enabled (not (include "llm-proxy.sqlite" .)) -}}
true
{{- end }}
{{- end }}

{{/*
llm-proxy.secretName is the chart-managed Secret.
*/}}
{{- define "llm-proxy.secretName" -}}
{{- include "llm-proxy.fullname" . }}
{{- end }}

{{/*
llm-proxy.secretData renders the chart-managed Secret's stringData: only the
values given inline, never those covered by an existing Secret.
*/}}
{{- define "llm-proxy.secretData" -}}
{{- if and .Values.database.url (not .Values.database.existingSecret) (not (include "llm-proxy.sqlite" .)) }}
DATABASE_URL: {{ .Values.database.url | quote }}
{{- end }}
{{- if and .Values.redis.url (not .Values.redis.existingSecret) }}
REDIS_URL: {{ .Values.redis.url | quote }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- with .Values.managementToken }}
MANAGEMENT_TOKEN: {{ . | quote }}
{{- end }}
{{- with .Values.encryptionKey }}
ENCRYPTION_KEY: {{ . | quote }}
{{- end }}
{{- with .Values.metricsToken }}
METRICS_TOKEN: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
llm-proxy.databaseURLRef is the secretKeyRef of DATABASE_URL on PostgreSQL.
The argument is a dict: ctx (the root context) and secret (the chart's own
Secret to use when no existingSecret is set).
*/}}
{{- define "llm-proxy.databaseURLRef" -}}
{{- $v := .ctx.Values.database -}}
secretKeyRef:
  name: {{ default .secret $v.existingSecret }}
  key: {{ ternary $v.existingSecretKey "DATABASE_URL" (not (empty $v.existingSecret)) }}
{{- end }}

{{/*
llm-proxy.secretEnv renders the proxy's env entries read from Secrets.
*/}}
{{- define "llm-proxy.secretEnv" -}}
{{- $own := include "llm-proxy.secretName" . -}}
{{- if not (include "llm-proxy.sqlite" .) }}
- name: DATABASE_URL
  valueFrom:
    {{- include "llm-proxy.databaseURLRef" (dict "ctx" . "secret" $own) | nindent 4 }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: REDIS_URL
{{- end }}
{{- if .Values.existingSecret }}
- name: MANAGEMENT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.existingSecretKeys.managementToken }}
      # An absent management token disables /manage rather than the pod.
      optional: true
- name: ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.existingSecretKeys.encryptionKey }}
- name: METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.existingSecretKeys.metricsToken }}
      # Without it /metrics stays open and names no project.
      optional: true
{{- else }}
{{- if .Values.managementToken }}
- name: MANAGEMENT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: MANAGEMENT_TOKEN
{{- end }}
{{- if .Values.encryptionKey }}
- name: ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: ENCRYPTION_KEY
{{- end }}
{{- if .Values.metricsToken }}
- name: METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: METRICS_TOKEN
{{- end }}
{{- end }}
{{- end }}

{{/*
llm-proxy.validate fails the rendering on settings that cannot work.
*/}}
{{- define "llm-proxy.validate" -}}
{{- if and (include "llm-proxy.sqlite" .) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "SQLite serves exactly one replica: set database.url or database.existingSecret (PostgreSQL) for replicaCount > 1 or autoscaling.enabled" }}
{{- end }}
{{- if and .Values.database.url .Values.database.existingSecret }}
{{- fail "set database.url or database.existingSecret, not both" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "set redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- if and (not (include "llm-proxy.sqlite" .)) (not .Values.encryptionKey) (not .Values.existingSecret) }}
{{- fail "PostgreSQL needs encryptionKey or existingSecret: every replica must share ENCRYPTION_KEY" }}
{{- end }}
{{- if and .Values.existingSecret (or .Values.managementToken .Values.encryptionKey .Values.metricsToken) }}
{{- fail "set managementToken/encryptionKey/metricsToken or existingSecret, not both" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
