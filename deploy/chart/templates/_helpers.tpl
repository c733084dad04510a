{{/* The objects' name: the release name, or "<release>-swoll" when it does not contain "swoll". */}}
{{- define "swoll.fullname" -}}
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

{{/* The labels selectors use: the agent's pods carry them and nothing selects narrower. */}}
{{- define "swoll.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "swoll.labels" -}}
{{ include "swoll.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: swoll
{{- end -}}

{{/* `--listen`'s address: host:port, with an IPv6 host in brackets. */}}
{{- define "swoll.listen" -}}
{{- if contains ":" .Values.listenAddress -}}
[{{ .Values.listenAddress }}]:{{ .Values.port }}
{{- else -}}
{{ .Values.listenAddress }}:{{ .Values.port }}
{{- end -}}
{{- end -}}
