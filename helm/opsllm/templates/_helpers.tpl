{{/* Names and labels shared by every template. */}}

{{- define "opsllm.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-scoped names carry the release namespace: two releases in two namespaces must not collide. */}}
{{- define "opsllm.clusterName" -}}
{{- printf "%s-%s-operator" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "opsllm.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "opsllm.fullname" .) -}}
{{- end -}}

{{- define "opsllm.selectorLabels" -}}
app.kubernetes.io/name: opsllm-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "opsllm.labels" -}}
{{ include "opsllm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: opsllm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Lab namespaces: the allowlist plus the chaos namespace, once each, as a YAML list. */}}
{{- define "opsllm.labNamespaces" -}}
{{- $all := .Values.settings.allowedNamespaces -}}
{{- with .Values.settings.chaosNamespace }}{{ $all = append $all . }}{{ end -}}
{{- toYaml (uniq $all) -}}
{{- end -}}

{{/* The settings file: the values' settings with the metrics port the chart exposes. */}}
{{- define "opsllm.settings" -}}
{{- $port := ternary .Values.metrics.port 0 .Values.metrics.enabled -}}
{{- toYaml (merge (dict "metricsPort" $port) (deepCopy .Values.settings)) -}}
{{- end -}}

{{- define "opsllm.claimName" -}}
{{- if .Values.storage.existingClaim -}}
{{- .Values.storage.existingClaim -}}
{{- else if .Values.storage.create -}}
{{- printf "%s-data" (include "opsllm.fullname" .) -}}
{{- end -}}
{{- end -}}
