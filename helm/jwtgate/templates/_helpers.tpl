{{/*
Chart name, truncated to 63 characters (the DNS-1123 label limit).
*/}}
{{- define "jwtgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or the release name alone when it
already contains the chart name. Truncated to 63 characters.
*/}}
{{- define "jwtgate.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "jwtgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. Immutable on the Deployment: never add to these.
*/}}
{{- define "jwtgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jwtgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels for every resource.
*/}}
{{- define "jwtgate.labels" -}}
helm.sh/chart: {{ include "jwtgate.chart" . }}
{{ include "jwtgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jwtgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "jwtgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jwtgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag
(tag defaults to the chart appVersion).
Usage: include "jwtgate.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion)
*/}}
{{- define "jwtgate.imageRef" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" $img.digest) -}}
{{- fail (printf "image digest %q must look like sha256:<64 hex chars>" $img.digest) -}}
{{- end -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (toString ($img.tag | default .default)) -}}
{{- end -}}
{{- end }}

{{/*
Image pull secrets; accepts a list of names or of {name: ...} objects.
*/}}
{{- define "jwtgate.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "map" . }}
  - name: {{ .name | quote }}
{{- else }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Value of the config key `listen`, derived from listenAddress + containerPort.
*/}}
{{- define "jwtgate.listen" -}}
{{- printf "%s:%d" .Values.listenAddress (int .Values.containerPort) -}}
{{- end }}

{{/*
The jwtgate config file (YAML). Renders .Values.config with `listen` added.
Also enforces invariants the JSON schema cannot express.
*/}}
{{- define "jwtgate.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- if hasKey $cfg "listen" -}}
{{- fail "config.listen must not be set: the chart derives it from listenAddress and containerPort" -}}
{{- end -}}
{{- if not $cfg.issuers -}}
{{- fail "config.issuers must list at least one identity provider" -}}
{{- end -}}
{{- $names := list -}}
{{- range $cfg.issuers -}}
{{- if has .name $names -}}
{{- fail (printf "config.issuers: duplicate issuer name %q" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $_ := set $cfg "listen" (include "jwtgate.listen" .) -}}
{{- toYaml $cfg -}}
{{- end }}

{{/*
Identity headers set by jwtgate (from config.claims_to_headers), joined with
commas for the ingress-nginx auth-response-headers annotation. Canonical
Title-Case, as jwtgate sends them: with auth-keepalive ingress-nginx looks the
names up case-sensitively. jwtgate's built-in default is sub -> X-Auth-Subject,
iss -> X-Auth-Issuer.
*/}}
{{- define "jwtgate.responseHeaders" -}}
{{- $headers := list -}}
{{- range (.Values.config.claims_to_headers | default list) -}}
{{- $headers = append $headers (lower .header | title) -}}
{{- end -}}
{{- if not $headers -}}
{{- $headers = list "X-Auth-Subject" "X-Auth-Issuer" -}}
{{- end -}}
{{- join "," ($headers | uniq) -}}
{{- end }}

{{/*
nginx auth cache key: must contain the token, i.e. the Authorization header
and, when jwtgate also reads a cookie (config.token.cookie), that cookie.
*/}}
{{- define "jwtgate.authCacheKey" -}}
{{- $cookie := "" -}}
{{- with .Values.config.token }}{{ $cookie = .cookie | default "" }}{{ end -}}
{{- if $cookie -}}
{{- printf "$http_authorization$cookie_%s" $cookie -}}
{{- else -}}
$http_authorization
{{- end -}}
{{- end }}

{{/*
Shutdown budget check: terminationGracePeriodSeconds must exceed
preStop sleep + drain delay + grace period.
*/}}
{{- define "jwtgate.validateShutdown" -}}
{{- $shutdown := .Values.config.shutdown | default dict -}}
{{- $drain := int ($shutdown.drain_delay_seconds | default 0) -}}
{{- $grace := int ($shutdown.grace_seconds | default 20) -}}
{{- $preStop := 0 -}}
{{- if .Values.lifecycle.preStopSleep.enabled -}}
{{- $preStop = int .Values.lifecycle.preStopSleep.seconds -}}
{{- if semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version -}}
{{- fail (printf "lifecycle.preStopSleep.enabled needs Kubernetes >= 1.30 (target is %s); jwtgate's config.shutdown.drain_delay_seconds covers endpoint propagation without it" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- end -}}
{{- $needed := add $preStop $drain $grace -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStop sleep (%d) + config.shutdown.drain_delay_seconds (%d) + config.shutdown.grace_seconds (%d) = %d" (int .Values.terminationGracePeriodSeconds) $preStop $drain $grace $needed) -}}
{{- end -}}
{{- end }}

{{/*
Namespace of an optional object: explicit value or the release namespace.
Usage: include "jwtgate.namespace" (dict "ns" .Values.serviceMonitor.namespace "root" .)
*/}}
{{- define "jwtgate.namespace" -}}
{{- default .root.Release.Namespace .ns -}}
{{- end }}

{{/*
PromQL label matchers for this release's series.
*/}}
{{- define "jwtgate.promSelector" -}}
{{- if .Values.prometheusRule.selector -}}
{{- .Values.prometheusRule.selector -}}
{{- else -}}
{{- printf "namespace=%q, job=%q" .Release.Namespace (include "jwtgate.fullname" .) -}}
{{- end -}}
{{- end }}

{{/*
Labels of the `helm test` pod. Deliberately NOT the selector labels (the
Service, PDB and NetworkPolicy must not select the test pod).
*/}}
{{- define "jwtgate.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "jwtgate.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}
