{{/*
The pod template of a worker group's pods: (dict "root" $ "role" NAME "v" $values).
One container runs the pod's ranks as child processes
(`tandem worker --local-ranks K`): rank i of the pod on GPU i and on the
worker ports + i. A single-node group's pod holds all tp ranks and names
the group after itself; a pod of a LeaderWorkerSet group holds
tp/nodesPerGroup ranks from --node-rank (the LWS worker index) on, and the
group is named after the LWS group index.
*/}}
{{- define "tandem.workerPod" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $v := .v }}
{{- $k := int (include "tandem.localRanks" $v) }}
{{- $p := $root.Values.workerPorts }}
{{- $shm := $v.shmSize | default (ternary "8Gi" "" (eq $v.device "cuda")) }}
metadata:
  labels:
    {{- include "tandem.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
  {{- with $v.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- include "tandem.podPlacement" (dict "root" $root "spec" $v) | nindent 2 }}
  terminationGracePeriodSeconds: 30
  {{- include "tandem.modelInit" (dict "root" $root "weights" true "storage" $v.ephemeralStorage) | nindent 2 }}
  containers:
    - name: worker
      image: {{ include "tandem.image" (dict "root" $root "role" $v) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - worker
        - --role={{ $role }}
        - --group=$(TANDEM_GROUP)
        - --tp={{ $v.tp }}
        - --local-ranks={{ $k }}
        {{- if $v.multiNode }}
        - --node-rank=$(TANDEM_NODE_RANK)
        - --listen=0.0.0.0:{{ $p.ring }}
        {{- end }}
        - --etcd-endpoints={{ include "tandem.etcdEndpoints" $root }}
        - --etcd-prefix={{ include "tandem.etcdPrefix" $root }}
        - --model={{ include "tandem.modelDir" $root }}
        - --model-name={{ include "tandem.modelName" $root }}
        - --device={{ $v.device }}
        - --grpc-addr=0.0.0.0:{{ $p.grpc }}
        - --advertise-addr=$(POD_IP):{{ $p.grpc }}
        - --metrics-addr=0.0.0.0:{{ $p.metrics }}
        - --max-batch-tokens={{ $v.maxBatchTokens }}
        - --kv-cache-mb={{ $v.kvCacheMB }}
        - --kv-cache-dtype={{ $v.kvCacheDtype }}
        {{- if not $v.enablePrefixCaching }}
        - --no-prefix-caching
        {{- end }}
        {{- include "tandem.internalTLSArgs" $root | nindent 8 }}
        {{- with $root.Values.otel.endpoint }}
        - --otlp-endpoint={{ . }}
        {{- end }}
        {{- range $v.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- if $v.multiNode }}
        - name: TANDEM_GROUP_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['leaderworkerset.sigs.k8s.io/group-index']
        - name: TANDEM_NODE_RANK
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']
        - name: TANDEM_GROUP
          value: {{ printf "%s-%s-$(TANDEM_GROUP_INDEX)" (include "tandem.fullname" $root) $role }}
        {{- else }}
        - name: TANDEM_GROUP
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- include "tandem.cacheEnv" $root | nindent 8 }}
        {{- with $v.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- range $i := until $k }}
        - {name: grpc-{{ $i }}, containerPort: {{ add $p.grpc $i }}}
        - {name: metrics-{{ $i }}, containerPort: {{ add $p.metrics $i }}}
        {{- if $v.multiNode }}
        - {name: ring-{{ $i }}, containerPort: {{ add $p.ring $i }}}
        {{- end }}
        {{- end }}
      # The probes ask the pod's first rank: rank 0 of a group is ready only
      # when every rank of its group has joined.
      startupProbe:
        httpGet: {path: /healthz, port: metrics-0}
        periodSeconds: 5
        failureThreshold: 60
      livenessProbe:
        httpGet: {path: /healthz, port: metrics-0}
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet: {path: /readyz, port: metrics-0}
        periodSeconds: 5
        failureThreshold: 2
      resources:
        {{- include "tandem.withStorage" (dict "res" (include "tandem.workerResources" (dict "role" $role "v" $v "k" $k) | fromYaml) "storage" $v.ephemeralStorage) | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        {{- include "tandem.commonMounts" $root | nindent 8 }}
        {{- if $shm }}
        - {name: shm, mountPath: /dev/shm}
        {{- end }}
  volumes:
    {{- include "tandem.commonVolumes" (dict "root" $root "storage" $v.ephemeralStorage) | nindent 4 }}
    {{- if $shm }}
    # /dev/shm: NCCL's shared-memory transport between the pod's ranks
    # (memory, counted against the pod's).
    - name: shm
      emptyDir: {medium: Memory, sizeLimit: {{ $shm }}}
    {{- end }}
{{- end }}

{{/* A role's resources; device: cuda adds nvidia.com/gpu = ranks per pod. */}}
{{- define "tandem.workerResources" -}}
{{- $res := deepCopy (.v.resources | default dict) }}
{{- if eq .v.device "cuda" }}
{{- $limits := $res.limits | default dict }}
{{- range $kind := list "limits" "requests" }}
{{- $have := index ($res | dig $kind dict) "nvidia.com/gpu" }}
{{- if and $have (ne (int $have) $.k) }}
{{- fail (printf "%s.resources.%s.nvidia.com/gpu is %v, but each pod of %s runs %d ranks (tp / nodesPerGroup), one GPU each" $.role $kind $have $.role $.k) }}
{{- end }}
{{- end }}
{{- $_ := set $limits "nvidia.com/gpu" $.k }}
{{- $_ = set $res "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}
