{{/* Names are truncated to 63 characters, the limit of a DNS label. */}}
{{- define "raydio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "raydio.fullname" -}}
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

{{/* KubeRay appends "-serve-svc" (10 characters) to the RayService name; leave room for it. */}}
{{- define "raydio.rayServiceName" -}}
{{- include "raydio.fullname" . | trunc 53 | trimSuffix "-" }}
{{- end }}

{{- define "raydio.serveServiceName" -}}
{{- printf "%s-serve-svc" (include "raydio.rayServiceName" .) }}
{{- end }}

{{- define "raydio.selectorLabels" -}}
app.kubernetes.io/name: {{ include "raydio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "raydio.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "raydio.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: raydio
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "raydio.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "raydio.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "raydio.secretName" -}}
{{- default (include "raydio.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "raydio.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Serve HTTP port, from the Serve config so the two can never disagree. */}}
{{- define "raydio.servePort" -}}
{{- (.Values.serveConfig.http_options | default dict).port | default 8000 | int }}
{{- end }}

{{/* Environment of every raydio container; the Secret comes on top through envFrom. */}}
{{- define "raydio.env" -}}
# Ray, Gradio, torch and the SQLite default write under HOME; the root filesystem is read-only.
- {name: HOME, value: /tmp}
- {name: RAYDIO_ENVIRONMENT, value: {{ .Values.environment }}}
# HAProxy in front of the ingress replicas instead of Serve's Python proxy (values: haproxy).
- {name: RAY_SERVE_ENABLE_HA_PROXY, value: {{ ternary "1" "0" .Values.haproxy | quote }}}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
One Ray pod template. Call with (dict "root" $ "group" "head"|"gpu"|"cpu" "spec" <group values> "gpus" <int>).
Volumes: /tmp/ray is named "ray-logs" so KubeRay mounts the same emptyDir into the autoscaler sidecar;
KubeRay adds /dev/shm (memory-backed) for the object store by itself.
*/}}
{{- define "raydio.podTemplate" -}}
{{- $root := .root }}
{{- $spec := .spec -}}
{{- /* No chart or app version labels here: any change to rayClusterConfig makes KubeRay build a new cluster. */ -}}
metadata:
  labels:
    {{- include "raydio.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ printf "ray-%s" .group }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $root.Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "raydio.serviceAccountName" $root }}
  {{- /* The autoscaler sidecar scales the RayCluster through the Kubernetes API with the head's token. */}}
  automountServiceAccountToken: {{ or $root.Values.serviceAccount.automountToken (and (eq .group "head") $root.Values.autoscaler.enabled) }}
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $spec.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $root.Values.migrations.enabled }}
  initContainers:
    # Every pod, not only the head: with the default SQLite database each pod has its own file.
    # Concurrent runs against one PostgreSQL are safe to retry: a failed init container restarts.
    - name: migrate
      image: {{ include "raydio.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command:
        - python
        - -c
        - |
          from services.config import get_settings
          from services.storage.db import get_engine, migrate
          url = get_settings().database_url
          get_engine(url)  # creates the folder of a SQLite file; Alembic alone does not
          migrate(url)
      env:
        {{- include "raydio.env" $root | nindent 8 }}
      envFrom:
        - secretRef:
            name: {{ include "raydio.secretName" $root }}
      resources:
        requests: {cpu: 500m, memory: 256Mi}
        limits: {cpu: 500m, memory: 256Mi}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - {name: tmp, mountPath: /tmp}
  {{- end }}
  containers:
    - name: ray
      image: {{ include "raydio.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      ports:
        {{- if eq .group "head" }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve, containerPort: {{ include "raydio.servePort" $root }}}
        - {name: metrics, containerPort: 8080}
      env:
        {{- include "raydio.env" $root | nindent 8 }}
      envFrom:
        - secretRef:
            name: {{ include "raydio.secretName" $root }}
      {{- $resources := deepCopy $spec.resources }}
      {{- if .gpus }}
      {{- $_ := set $resources.requests "nvidia.com/gpu" .gpus }}
      {{- $_ := set $resources.limits "nvidia.com/gpu" .gpus }}
      {{- end }}
      resources:
        {{- toYaml $resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - {name: ray-logs, mountPath: /tmp/ray}
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: ray-logs
      emptyDir: {sizeLimit: {{ $root.Values.rayTmpSizeLimit }}}
    - name: tmp
      emptyDir: {sizeLimit: {{ $root.Values.tmpSizeLimit }}}
{{- end }}

{{/*
Cross-field checks the JSON schema cannot express. Every mistake is collected, then reported in one
failure, so a values file is fixed in one round instead of one error per `helm install`.
*/}}
{{- define "raydio.validateValues" -}}
{{- $errors := list }}
{{- $v := .Values }}
{{- $groups := dict "head" $v.head }}
{{- if $v.workers.gpu.enabled }}{{- $_ := set $groups "workers.gpu" $v.workers.gpu }}{{- end }}
{{- if $v.workers.cpu.enabled }}{{- $_ := set $groups "workers.cpu" $v.workers.cpu }}{{- end }}
{{- range $key, $group := $groups }}
{{- $requests := $group.resources.requests | default dict }}
{{- $limits := $group.resources.limits | default dict }}
{{- range $resource := list "cpu" "memory" }}
{{- if ne (toString (get $requests $resource)) (toString (get $limits $resource)) }}
{{- $errors = append $errors (printf "%s.resources: requests.%s (%v) must equal limits.%s (%v); Ray sizes itself from the limits and the scheduler from the requests." $key $resource (get $requests $resource) $resource (get $limits $resource)) }}
{{- end }}
{{- end }}
{{- if or (hasKey $requests "nvidia.com/gpu") (hasKey $limits "nvidia.com/gpu") }}
{{- $errors = append $errors (printf "%s.resources: do not set nvidia.com/gpu here; the chart sets it from workers.gpu.gpusPerPod." $key) }}
{{- end }}
{{- end }}
{{- range $name := list "gpu" "cpu" }}
{{- $group := get $v.workers $name }}
{{- if and $group.enabled (gt (int $group.minReplicas) (int $group.maxReplicas)) }}
{{- $errors = append $errors (printf "workers.%s: minReplicas (%v) must not exceed maxReplicas (%v)." $name $group.minReplicas $group.maxReplicas) }}
{{- end }}
{{- end }}
{{- if not (or $v.workers.gpu.enabled $v.workers.cpu.enabled) }}
{{- $errors = append $errors "workers: enable workers.gpu or workers.cpu; the head serves no models." }}
{{- end }}
{{- $gpuWanted := false }}
{{- range $app := $v.serveConfig.applications }}
{{- $deps := dict }}
{{- range $name, $dep := ($app.args | default dict) }}
{{- if kindIs "map" $dep }}{{- $_ := set $deps $name $dep }}{{- end }}
{{- end }}
{{- range $i, $model := (($app.args | default dict).models | default list) }}
{{- $_ := set $deps (printf "models[%s].deployment" $model.name) ($model.deployment | default dict) }}
{{- end }}
{{- range $name, $dep := $deps }}
{{- if gt (float64 ($dep.num_gpus | default 0)) 0.0 }}
{{- $gpuWanted = true }}
{{- if not $v.workers.gpu.enabled }}
{{- $errors = append $errors (printf "serveConfig.applications[%s].args.%s.num_gpus is %v but workers.gpu.enabled is false: the replica could never be placed." $app.name $name $dep.num_gpus) }}
{{- else if gt (float64 $dep.num_gpus) (float64 $v.workers.gpu.gpusPerPod) }}
{{- $errors = append $errors (printf "serveConfig.applications[%s].args.%s.num_gpus (%v) exceeds workers.gpu.gpusPerPod (%v)." $app.name $name $dep.num_gpus $v.workers.gpu.gpusPerPod) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $app := $v.serveConfig.applications }}
{{- if eq (toString $app.import_path) "services.app:build_ui_app" }}
{{- $uiScaling := ((($app.args | default dict).ui | default dict).autoscaling | default dict) }}
{{- if gt (int ($uiScaling.max_replicas | default 1)) 1 }}
{{- $errors = append $errors (printf "serveConfig.applications[%s].args.ui.autoscaling.max_replicas is %v: the ui application runs one replica (Gradio's queue and sessions live in the process; docs/operations.md). Scale the api application and the models instead." $app.name $uiScaling.max_replicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.workers.gpu.enabled (not $gpuWanted) }}
{{- $errors = append $errors "workers.gpu.enabled is true but no deployment asks for num_gpus: GPU pods would sit idle. Disable the group or give a model num_gpus." }}
{{- end }}
{{- if and $v.monitoring.podMonitor.enabled $v.monitoring.serviceMonitor.enabled }}
{{- $errors = append $errors "monitoring: enable podMonitor or serviceMonitor, not both; each Ray pod would be scraped twice." }}
{{- end }}
{{- if and (eq $v.upgradeStrategy.type "NewClusterWithIncrementalUpgrade") (not $v.upgradeStrategy.clusterUpgradeOptions) }}
{{- $errors = append $errors "upgradeStrategy.clusterUpgradeOptions is required for NewClusterWithIncrementalUpgrade (gatewayClassName, stepSizePercent, intervalSeconds)." }}
{{- end }}
{{- if and (eq $v.upgradeStrategy.type "NewClusterWithIncrementalUpgrade") $v.ingress.enabled }}
{{- $errors = append $errors "ingress.enabled: with NewClusterWithIncrementalUpgrade, KubeRay serves through a Gateway per cluster and no stable Serve Service exists for an Ingress; route to the Gateway instead." }}
{{- end }}
{{- if and (ne $v.upgradeStrategy.type "NewClusterWithIncrementalUpgrade") $v.upgradeStrategy.clusterUpgradeOptions }}
{{- $errors = append $errors (printf "upgradeStrategy.clusterUpgradeOptions only applies to NewClusterWithIncrementalUpgrade, not %s." $v.upgradeStrategy.type) }}
{{- end }}
{{- if and $v.service.excludeHead (eq ($v.serveConfig.proxy_location | default "EveryNode") "HeadOnly") }}
{{- $errors = append $errors "service.excludeHead is true but serveConfig.proxy_location is HeadOnly: the Serve Service would have no endpoints. Use EveryNode or keep the head in the Service." }}
{{- end }}
{{- if and $v.ingress.enabled $v.ingress.tls.enabled (not $v.ingress.tls.secretName) }}
{{- $errors = append $errors "ingress.tls.secretName is required when ingress.tls.enabled is true." }}
{{- end }}
{{- if and $v.ingress.enabled $v.ingress.tls.enabled (not $v.ingress.host) }}
{{- $errors = append $errors "ingress.host is required when ingress.tls.enabled is true (a certificate names a host)." }}
{{- end }}
{{- if and $v.secrets.existingSecret (or $v.secrets.jwtSecret $v.secrets.databaseUrl) }}
{{- $errors = append $errors "secrets: set existingSecret or the individual secrets (jwtSecret, databaseUrl), not both; the individual values would be ignored." }}
{{- end }}
{{- /* A SQLite URL (the default when none is set) is a file inside each pod: with more than one pod able to run a
replica that opens the database (ingress: keys and sessions; jobs: the job queue), each would see its own data. */}}
{{- $dbUrl := $v.secrets.databaseUrl }}
{{- range $entry := $v.env }}{{- if eq (toString $entry.name) "RAYDIO_DATABASE_URL" }}{{- $dbUrl = toString $entry.value }}{{- end }}{{- end }}
{{- if and (not $v.secrets.existingSecret) (or (not $dbUrl) (hasPrefix "sqlite" (lower $dbUrl))) }}
{{- $pods := 0 }}
{{- if $v.workers.gpu.enabled }}{{- $pods = add $pods (int $v.workers.gpu.maxReplicas) }}{{- end }}
{{- if $v.workers.cpu.enabled }}{{- $pods = add $pods (int $v.workers.cpu.maxReplicas) }}{{- end }}
{{- $openers := list }}
{{- $replicas := 0 }}
{{- range $app := $v.serveConfig.applications }}
{{- if eq (toString $app.import_path) "services.app:build_app" }}
{{- $args := $app.args | default dict }}
{{- range $name := list "ingress" "jobs" }}
{{- $section := get $args $name | default dict }}
{{- $max := int ((get $section "autoscaling" | default dict).max_replicas | default 1) }}
{{- $replicas = add $replicas $max }}
{{- $openers = append $openers (printf "%s.%s: %d" $app.name $name $max) }}
{{- end }}
{{- else if eq (toString $app.import_path) "services.app:build_ui_app" }}
{{- $replicas = add $replicas 1 }}
{{- $openers = append $openers (printf "%s.ui: 1" $app.name) }}
{{- end }}
{{- end }}
{{- if and (gt (int $pods) 1) (gt (int $replicas) 1) }}
{{- $errors = append $errors (printf "secrets.databaseUrl %s, so every pod opens its own SQLite file, but %d replicas open the database (max_replicas of %s) across up to %d worker pods: API keys, sessions and jobs would differ from pod to pod. Set secrets.databaseUrl (or RAYDIO_DATABASE_URL in existingSecret) to a shared database such as postgresql+psycopg://user:pass@host/raydio, or run everything on one worker pod." (ternary "is empty" (printf "is %s" $dbUrl) (not $dbUrl)) (int $replicas) (join ", " $openers) (int $pods)) }}
{{- end }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nraydio: %d problem(s) in the values:\n  - %s\n" (len $errors) (join "\n  - " $errors)) }}
{{- end }}
{{- end }}
