{{/* Chart name. */}}
{{- define "retrain-watcher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (≤ 63 characters). */}}
{{- define "retrain-watcher.fullname" -}}
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

{{- define "retrain-watcher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retrain-watcher.labels" -}}
helm.sh/chart: {{ include "retrain-watcher.chart" . }}
{{ include "retrain-watcher.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "retrain-watcher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retrain-watcher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "retrain-watcher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "retrain-watcher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "retrain-watcher.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* A job spec with the chart's defaults (namespace, serviceAccount). */}}
{{- define "retrain-watcher.jobSpec" -}}
{{- $spec := deepCopy .spec }}
{{- $_ := set $spec "namespace" .root.Values.trainer.namespace }}
{{- if not (hasKey $spec "serviceAccount") }}{{ $_ := set $spec "serviceAccount" .root.Values.trainer.serviceAccount }}{{ end }}
{{- toYaml $spec }}
{{- end }}

{{/* The watcher's config file (docs/watcher.md), built from values. */}}
{{- define "retrain-watcher.config" -}}
{{- $v := .Values }}
{{- $jobs := dict }}
{{- range $name, $_ := $v.jobs }}{{ $_ := set $jobs $name (dict "file" (printf "job-%s.yaml" $name)) }}{{ end }}
{{- $triggers := list }}
{{- range $v.triggers }}
{{- $t := deepCopy . }}
{{- if not (hasKey $t "bucket") }}{{ $_ := set $t "bucket" $v.gcp.dataBucket }}{{ end }}
{{- if and (not (hasKey $t "prefix")) $v.gcp.dataPrefix }}{{ $_ := set $t "prefix" $v.gcp.dataPrefix }}{{ end }}
{{- $triggers = append $triggers $t }}
{{- end }}
{{- $sources := dict }}
{{- if $v.gcp.subscription }}
{{- $_ := set $sources "pubsub" (merge (dict "subscription" $v.gcp.subscription) (deepCopy $v.watcher.pubsub)) }}
{{- end }}
{{- if $v.poll.enabled }}
{{- $_ := set $sources "poll" (dict "intervalSeconds" $v.poll.intervalSeconds) }}
{{- end }}
{{- if $v.gcp.requestsSubscription }}
{{- $_ := set $sources "requests" (dict "subscription" $v.gcp.requestsSubscription) }}
{{- end }}
{{- $state := dict "bucket" $v.gcp.stateBucket "retentionDays" (int $v.gcp.stateRetentionDays) }}
{{- $cfg := dict "namespace" $v.trainer.namespace "state" $state "jobs" $jobs "triggers" $triggers "sources" $sources "server" (dict "port" (int $v.metrics.port)) }}
{{- if $v.gcp.deadLetterTopic }}{{ $_ := set $cfg "deadLetter" (dict "topic" $v.gcp.deadLetterTopic) }}{{ end }}
{{- toYaml (mergeOverwrite $cfg (deepCopy $v.watcher.extraConfig)) }}
{{- end }}
