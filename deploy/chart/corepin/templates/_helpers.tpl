{{/*
Labels Helm adds to every object, on top of the ones deploy/ gives it (the
chart test ignores exactly these when it compares with deploy/).
*/}}
{{- define "corepin.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* image: repository:tag, then imagePullPolicy when one is set. */}}
{{- define "corepin.image" -}}
image: {{ printf "%s:%s" .repository .tag }}
{{- with .pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/* isSet: "true" when a value is given (null means the component's default; 0 is a value). */}}
{{- define "corepin.isSet" -}}
{{- if not (kindIs "invalid" .) }}true{{ end }}
{{- end }}

{{/*
The extender's configuration file: extender.config, the capacity keys that
nodePolicy sets and the tls block, as one strict document (api.ParseConfig
refuses unknown keys; the chart test parses what this renders).
*/}}
{{- define "corepin.extenderConfig" -}}
{{- $cfg := dict }}
{{- range $k, $v := .Values.nodePolicy }}
{{- if include "corepin.isSet" $v }}{{ $_ := set $cfg $k $v }}{{ end }}
{{- end }}
{{- range $k, $v := .Values.scheduler.extender.config }}
{{- /* An empty list is the same as none, except for systemNamespaces, where [] means none and absent means kube-system. */}}
{{- if and (include "corepin.isSet" $v) (or (eq $k "systemNamespaces") (not (and (kindIs "slice" $v) (empty $v)))) }}
{{- $_ := set $cfg $k $v }}
{{- end }}
{{- end }}
{{- $tls := .Values.scheduler.extender.tls }}
{{- if $tls.enabled }}
{{- $t := dict "certFile" "/etc/corepin-tls/server/tls.crt" "keyFile" "/etc/corepin-tls/server/tls.key" }}
{{- if $tls.clientSecretName }}{{ $_ := set $t "clientCAFile" "/etc/corepin-tls/client/ca.crt" }}{{ end }}
{{- $_ := set $cfg "tls" $t }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Fails the render on values that cannot work together. */}}
{{- define "corepin.validate" -}}
{{- $tls := .Values.scheduler.extender.tls }}
{{- if and $tls.enabled (not $tls.secretName) }}
{{- fail "scheduler.extender.tls.enabled needs scheduler.extender.tls.secretName: the Secret with the extender's tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- if and (not $tls.enabled) (or $tls.clientSecretName $tls.serverName) }}
{{- fail "scheduler.extender.tls.clientSecretName and serverName take effect only with scheduler.extender.tls.enabled" }}
{{- end }}
{{- $p := .Values.placer | default dict }}
{{- if dig "enabled" false $p }}
{{- /* helm upgrade --reuse-values from a chart without placer.* keeps the old values: none of these. */}}
{{- if not (and (dig "placer" "" (.Values.images | default dict)) $p.clusters $p.kubeconfigSecret $p.tls) }}
{{- fail "placer.enabled needs images.placer, placer.clusters, placer.kubeconfigSecret and placer.tls: after helm upgrade --reuse-values from a chart without the placer, give --reset-then-reuse-values instead" }}
{{- end }}
{{- if and $p.tls.enabled (not $p.tls.secretName) }}
{{- fail "placer.tls.enabled needs placer.tls.secretName: the Secret with the placer's tls.crt and tls.key" }}
{{- end }}
{{- if and (not $p.tls.enabled) $p.tls.clientCASecretName }}
{{- fail (printf "placer.tls.clientCASecretName %q takes effect only with placer.tls.enabled" $p.tls.clientCASecretName) }}
{{- end }}
{{- end }}
{{- $m := dig "memberRBAC" dict $p }}
{{- if and (dig "subjects" list $m) (not (dig "enabled" false $m)) }}
{{- fail "placer.memberRBAC.subjects are bound to ClusterRole corepin-placer, which only placer.memberRBAC.enabled renders" }}
{{- end }}
{{- end }}
