{{/* The chart's name. */}}
{{- define "aws-cost-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: the release's name, with the chart's name unless the release has it. */}}
{{- define "aws-cost-exporter.fullname" -}}
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

{{- define "aws-cost-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aws-cost-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aws-cost-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aws-cost-exporter.labels" -}}
helm.sh/chart: {{ include "aws-cost-exporter.chart" . }}
{{ include "aws-cost-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aws-cost-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aws-cost-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aws-cost-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The IRSA trust policy's subject for the service account. */}}
{{- define "aws-cost-exporter.irsaSubject" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "aws-cost-exporter.serviceAccountName" .) }}
{{- end }}

{{/* "true" when storage is in S3 (storage.enabled and storage.s3.bucket), else empty. */}}
{{- define "aws-cost-exporter.s3Storage" -}}
{{- if and .Values.storage.enabled .Values.storage.s3.bucket }}true{{ end }}
{{- end }}

{{/* --storage.path's S3 URL: s3://<bucket>/<prefix>. */}}
{{- define "aws-cost-exporter.s3Url" -}}
{{- printf "s3://%s/%s" .Values.storage.s3.bucket .Values.storage.s3.prefix }}
{{- end }}

{{/* "true" when the pod mounts a storage volume (an emptyDir or a claim), else empty. */}}
{{- define "aws-cost-exporter.storageVolume" -}}
{{- if and .Values.storage.enabled (not .Values.storage.s3.bucket) }}true{{ end }}
{{- end }}

{{/* The storage volume's claim: an existing one, the chart's, or none (an emptyDir). */}}
{{- define "aws-cost-exporter.storageClaim" -}}
{{- if .Values.storage.existingClaim }}
{{- .Values.storage.existingClaim }}
{{- else if .Values.storage.persistentVolumeClaim.create }}
{{- include "aws-cost-exporter.fullname" . }}-storage
{{- end }}
{{- end }}

{{- define "aws-cost-exporter.testImage" -}}
{{- with .Values.tests.image }}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}
{{- end }}

{{/* The configuration file's content; fails when there is nothing to run. */}}
{{- define "aws-cost-exporter.config" -}}
{{- if not .Values.demo }}
{{- if not (get .Values.config "integrations") }}
{{- fail "config.integrations is empty: give the exporter at least one integration (see values.yaml), or set demo=true" }}
{{- end }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}

{{/* A probe from values; httpGet probes use HTTPS when the web configuration has TLS. */}}
{{- define "aws-cost-exporter.probe" -}}
{{- $root := index . 0 }}
{{- $probe := deepCopy (index . 1) }}
{{- if and $root.Values.webConfig.tls $probe.httpGet }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/* The labels of helm test's pod that the NetworkPolicy lets in. */}}
{{- define "aws-cost-exporter.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aws-cost-exporter.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The pod's topology spread: the values' constraints, or with more than one replica the
chart's default spread over nodes and zones (a preference: ScheduleAnyway). */}}
{{- define "aws-cost-exporter.topologySpreadConstraints" -}}
{{- if .Values.topologySpreadConstraints }}
{{- toYaml .Values.topologySpreadConstraints }}
{{- else if gt (int .Values.replicaCount) 1 }}
{{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ . }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "aws-cost-exporter.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}
