{{/* Names and labels. */}}
{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tandem.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tandem.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tandem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tandem.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The tandem image; with (dict "root" $ "role" $role) the role's image. */}}
{{- define "tandem.image" -}}
{{- $root := .root }}
{{- $img := $root.Values.image }}
{{- $tag := $img.tag | default $root.Chart.AppVersion }}
{{- if and .role (eq .role.device "cuda") }}
{{- $img = $root.Values.gpuImage }}
{{- $tag = $img.tag | default (printf "%s-cuda" $root.Chart.AppVersion) }}
{{- end }}
{{- if and .role .role.image }}
{{- $img = merge (dict) .role.image $img }}
{{- $tag = .role.image.tag | default $tag }}
{{- end }}
{{- printf "%s:%s" $img.repository $tag }}
{{- end }}

{{/* etcd: the bundled StatefulSet's names and the client URLs every
process is given (each member through the headless Service). */}}
{{- define "tandem.etcdName" -}}
{{- printf "%s-etcd" (include "tandem.fullname" .) }}
{{- end }}

{{- define "tandem.etcdPeers" -}}
{{- printf "%s-etcd-peers" (include "tandem.fullname" .) }}
{{- end }}

{{/* http, or https with internalTLS. */}}
{{- define "tandem.etcdScheme" -}}
{{- if .Values.internalTLS.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "tandem.etcdEndpoints" -}}
{{- if .Values.etcd.external.endpoints }}
{{- join "," .Values.etcd.external.endpoints }}
{{- else }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $urls = append $urls (printf "%s://%s-%d.%s.%s.svc:2379" (include "tandem.etcdScheme" $) (include "tandem.etcdName" $) $i (include "tandem.etcdPeers" $) $.Release.Namespace) }}
{{- end }}
{{- join "," $urls }}
{{- end }}
{{- end }}

{{/* The root of the release's keys in etcd (--etcd-prefix): releases
sharing one etcd keep apart. */}}
{{- define "tandem.etcdPrefix" -}}
{{- .Values.etcd.prefix | default (printf "/%s/%s" .Release.Namespace .Release.Name) }}
{{- end }}

{{/* The model: its directory inside the /model mount and its served id. */}}
{{- define "tandem.modelDir" -}}
{{- if eq .Values.model.source "preset" }}
{{- printf "/model/%s" .Values.model.preset }}
{{- else if eq .Values.model.source "pvc" }}
{{- clean (printf "/model/%s" .Values.model.pvc.path) }}
{{- else }}
{{- print "/model" }}
{{- end }}
{{- end }}

{{- define "tandem.modelName" -}}
{{- if .Values.model.name }}
{{- .Values.model.name }}
{{- else if eq .Values.model.source "preset" }}
{{- .Values.model.preset }}
{{- else if eq .Values.model.source "pvc" }}
{{- base (clean (printf "/%s/%s" .Values.model.pvc.claimName .Values.model.pvc.path)) }}
{{- else }}
{{- base .Values.model.hostPath.path }}
{{- end }}
{{- end }}

{{/* The model volume, read-only in the serving containers; a preset is
written into the pod's scratch volume (tandem.commonVolumes) instead. */}}
{{- define "tandem.modelVolume" -}}
{{- if ne .Values.model.source "preset" }}
- name: model
{{- if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: true
{{- else }}
  hostPath:
    path: {{ .Values.model.hostPath.path }}
    type: Directory
{{- end }}
{{- end }}
{{- end }}

{{/* The mount of the model volume at /model: writable for the init
container ((dict "root" $ "write" true)), else read-only. */}}
{{- define "tandem.modelMount" -}}
{{- if eq .root.Values.model.source "preset" }}
- {name: scratch, mountPath: /model, subPath: model{{ if not .write }}, readOnly: true{{ end }}}
{{- else }}
- {name: model, mountPath: /model, readOnly: true}
{{- end }}
{{- end }}

{{/* The init container writing the preset model (source: preset):
(dict "root" $ "weights" BOOL "storage" SIZE). The coordinator only
tokenizes, so its copy holds config.json and the tokenizer (--no-weights). */}}
{{- define "tandem.modelInit" -}}
{{- $root := .root }}
{{- if eq $root.Values.model.source "preset" }}
initContainers:
  - name: model-init
    image: {{ include "tandem.image" (dict "root" $root) }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: [model, init, --preset, {{ $root.Values.model.preset | quote }}, --out, {{ include "tandem.modelDir" $root | quote }}, --exist-ok{{ if not .weights }}, --no-weights{{ end }}]
    env:
      {{- include "tandem.cacheEnv" $root | nindent 6 }}
    resources:
      {{- include "tandem.withStorage" (dict "res" $root.Values.initResources "storage" .storage) | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "tandem.modelMount" (dict "root" $root "write" true) | trim | nindent 6 }}
      - {name: scratch, mountPath: /tmp, subPath: tmp}
      - {name: scratch, mountPath: /cache, subPath: cache}
{{- end }}
{{- end }}

{{/* A container's resources with an ephemeral-storage request for the
pod's scratch volume, unless they name one: (dict "res" RESOURCES
"storage" SIZE). */}}
{{- define "tandem.withStorage" -}}
{{- $res := deepCopy (.res | default dict) }}
{{- $req := $res.requests | default dict }}
{{- if not (hasKey $req "ephemeral-storage") }}
{{- $_ := set $req "ephemeral-storage" .storage }}
{{- end }}
{{- $_ := set $res "requests" $req }}
{{- toYaml $res }}
{{- end }}

{{/* Writable places of a read-only root filesystem: the caches (compiled
CUDA kernels, presets) and the temporary directory. */}}
{{- define "tandem.cacheEnv" -}}
- name: XDG_CACHE_HOME
  value: /cache
- name: TANDEM_CACHE
  value: /cache/tandem
{{- end }}

{{/* The pod's volumes: (dict "root" $ "storage" SIZE). One emptyDir of
SIZE holds /tmp, the cache and a preset model, so its sizeLimit and the
containers' ephemeral-storage request are one number. */}}
{{- define "tandem.commonVolumes" -}}
- name: scratch
  emptyDir: {sizeLimit: {{ .storage }}}
{{- include "tandem.modelVolume" .root }}
{{- include "tandem.internalTLSVolume" .root }}
{{- end }}

{{- define "tandem.commonMounts" -}}
- {name: scratch, mountPath: /tmp, subPath: tmp}
- {name: scratch, mountPath: /cache, subPath: cache}
{{- include "tandem.modelMount" (dict "root" . "write" false) }}
{{- include "tandem.internalTLSMount" . }}
{{- end }}

{{/* Mutual TLS inside the release: the Secret's volume, its mount, and
the flags of a tandem process. */}}
{{- define "tandem.internalTLSDir" -}}/etc/tandem/internal-tls{{- end }}

{{- define "tandem.internalTLSVolume" -}}
{{- if .Values.internalTLS.enabled }}
- name: internal-tls
  secret:
    secretName: {{ .Values.internalTLS.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "tandem.internalTLSMount" -}}
{{- if .Values.internalTLS.enabled }}
- {name: internal-tls, mountPath: {{ include "tandem.internalTLSDir" . }}, readOnly: true}
{{- end }}
{{- end }}

{{- define "tandem.internalTLSArgs" -}}
{{- if .Values.internalTLS.enabled }}
{{- $d := include "tandem.internalTLSDir" . }}
- --internal-ca={{ $d }}/ca.crt
- --internal-cert={{ $d }}/tls.crt
- --internal-key={{ $d }}/tls.key
{{- end }}
{{- end }}

{{/* Scheduling and security of a pod: (dict "root" $ "spec" $componentValues). */}}
{{- define "tandem.podPlacement" -}}
{{- $spec := .spec }}
serviceAccountName: {{ include "tandem.serviceAccountName" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $spec.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $spec.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $spec.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $spec.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The roles that get worker groups under the chosen mode. */}}
{{- define "tandem.roles" -}}
{{- if eq .Values.mode "unified" }}unified{{ else }}prefill,decode{{ end }}
{{- end }}

{{/* Ranks of one pod of a role's groups. */}}
{{- define "tandem.localRanks" -}}
{{- if .multiNode }}{{ div (int .tp) (int .nodesPerGroup) }}{{ else }}{{ .tp }}{{ end }}
{{- end }}

{{/* One ServiceMonitor endpoint's settings: (dict "sm" .Values.serviceMonitor). */}}
{{- define "tandem.smEndpoint" -}}
path: /metrics
interval: {{ .sm.interval }}
scrapeTimeout: {{ .sm.scrapeTimeout }}
honorLabels: {{ .sm.honorLabels }}
{{- with .sm.relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .sm.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
