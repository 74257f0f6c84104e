{{/* Names, labels and the pieces several templates share. */}}

{{- define "ipam.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ipam.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ipam.labels" -}}
{{ include "ipam.selectorLabels" . }}
app.kubernetes.io/part-of: ipam
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ipam.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The API server's version without a vendor suffix: v1.30.2 of v1.30.2-eks-1234. */}}
{{- define "ipam.kubeVersion" -}}
{{- regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version -}}
{{- end -}}

{{- define "ipam.schedulerApiVersion" -}}
{{- $v := include "ipam.kubeVersion" . -}}
{{- if .Values.schedulerConfig.apiVersion -}}
{{- .Values.schedulerConfig.apiVersion -}}
{{- else if semverCompare ">=1.25.0-0" $v -}}
kubescheduler.config.k8s.io/v1
{{- else if semverCompare ">=1.23.0-0" $v -}}
kubescheduler.config.k8s.io/v1beta3
{{- else if semverCompare ">=1.22.0-0" $v -}}
kubescheduler.config.k8s.io/v1beta2
{{- else -}}
kubescheduler.config.k8s.io/v1beta1
{{- end -}}
{{- end -}}

{{- define "ipam.cnpgCluster" -}}
{{- .Values.cloudnativepg.clusterName | default (printf "%s-db" (include "ipam.fullname" .)) -}}
{{- end -}}

{{- define "ipam.extenderTlsSecret" -}}
{{- if .Values.extender.tls.generate -}}
{{- printf "%s-extender-tls" (include "ipam.fullname" .) -}}
{{- else -}}
{{- required "extender.tls.existingSecret is required when extender.tls.generate is false" .Values.extender.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The extender's address as kube-scheduler calls it. */}}
{{- define "ipam.extenderUrl" -}}
{{- $scheme := ternary "https" "http" .Values.extender.tls.enabled -}}
{{- $host := printf "%s.%s.svc" (include "ipam.fullname" .) .Release.Namespace -}}
{{- if .Values.service.clusterIP -}}{{- $host = .Values.service.clusterIP -}}{{- end -}}
{{- printf "%s://%s:%d/v1" $scheme $host (int .Values.extender.port) -}}
{{- end -}}

{{/*
The extender entry of a KubeSchedulerConfiguration (identical in v1beta1..v1).
Argument: dict "root" $ "certDir" DIR.
*/}}
{{- define "ipam.extenderConfig" -}}
{{- $root := .root -}}
- urlPrefix: {{ include "ipam.extenderUrl" $root }}
  filterVerb: filter
  prioritizeVerb: prioritize
  # ipam is the binder: it records the address and creates the pod's Binding in one step.
  bindVerb: bind
  weight: 1
  enableHTTPS: {{ $root.Values.extender.tls.enabled }}
  {{- if $root.Values.extender.tls.enabled }}
  # Client certificate signed by the extender's client CA, and the CA of its serving cert.
  tlsConfig:
    certFile: {{ .certDir }}/tls.crt
    keyFile: {{ .certDir }}/tls.key
    caFile: {{ .certDir }}/ca.crt
  {{- end }}
  # The scheduler sends node names only; ipam keeps its own node cache.
  nodeCacheCapable: true
  # Never ignorable: an ignorable extender lets the default binder start pods without an IP.
  ignorable: false
  httpTimeout: {{ $root.Values.extender.httpTimeout }}
  managedResources:
    - name: {{ $root.Values.extender.managedResource }}
      ignoredByScheduler: true
{{- end -}}

{{/* The database URL variables of a container. Argument: dict "root" $ "role" "app"|"owner". */}}
{{- define "ipam.databaseEnv" -}}
{{- $root := .root -}}
{{- if $root.Values.cloudnativepg.enabled }}
{{- $cluster := include "ipam.cnpgCluster" $root }}
{{- $secret := ternary (printf "%s-app" $cluster) (printf "%s-db-serve" (include "ipam.fullname" $root)) (eq .role "owner") }}
{{- $user := ternary $root.Values.cloudnativepg.owner $root.Values.cloudnativepg.appRole (eq .role "owner") }}
# The operator's (owner) or the chart's (app) generated password: letters and digits, so it
# needs no percent-encoding in the URL.
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: password
- name: IPAM_DATABASE_URL
  value: {{ printf "postgresql+asyncpg://%s:$(DATABASE_PASSWORD)@%s-rw.%s.svc:5432/%s" $user $cluster $root.Release.Namespace $root.Values.cloudnativepg.database | quote }}
{{- else }}
{{- $ref := index $root.Values.database .role }}
- name: IPAM_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ref.existingSecret }}
      key: {{ $ref.key }}
{{- end }}
{{- end -}}

{{- define "ipam.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ipam.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
