{{/* The name of the Secret the hub mounts: fixed, the jupyterhub values refer to it by name. */}}
{{- define "science-gateway.hubConfigSecret" -}}science-gateway-hub-config{{- end -}}

{{- define "science-gateway.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The authenticator's config section for each authenticator the gateway ships. */}}
{{- define "science-gateway.authenticatorSection" -}}
{{- $sections := dict "science-gateway-checkin" "CheckinAuthenticator" "science-gateway-cilogon" "CILogonAuthenticator" "science-gateway-demo" "DemoAuthenticator" -}}
{{- get $sections . | required (printf "gateway.authenticator.class: %q is none of %s" . (keys $sections | sortAlpha | join ", ")) -}}
{{- end -}}

{{/* One value on a server's command line: integers as integers (Helm reads numbers as floats). */}}
{{- define "science-gateway.argValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 .) (floor .)) -}}{{ int64 . }}
{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/*
The settings of users' Jupyter servers (catalogue class and settings, gateway.serverConfig) as
traitlets command-line options: a list becomes one option per item, a mapping one KEY=VALUE
option per key (how traitlets reads List and Dict traits from the command line).
*/}}
{{- define "science-gateway.serverArgs" -}}
{{- $g := .Values.gateway -}}
{{- $sections := deepCopy ($g.serverConfig | default dict) -}}
{{- $catalog := $g.catalog | default dict -}}
{{- $args := list -}}
{{- if $catalog.class -}}
{{- $args = append $args (printf "--GatewayExtension.catalog_class=%s" $catalog.class) -}}
{{- $section := last (splitList "." $catalog.class) -}}
{{- $_ := set $sections $section (merge (deepCopy ($catalog.settings | default dict)) (get $sections $section | default dict)) -}}
{{- end -}}
{{- range $section := keys $sections | sortAlpha -}}
{{- $traits := get $sections $section -}}
{{- if not (kindIs "map" $traits) -}}{{- fail (printf "gateway.serverConfig.%s: expected a mapping of trait: value" $section) -}}{{- end -}}
{{- range $trait := keys $traits | sortAlpha -}}
{{- $value := get $traits $trait -}}
{{- if kindIs "slice" $value -}}
{{- range $item := $value -}}
{{- $args = append $args (printf "--%s.%s=%s" $section $trait (include "science-gateway.argValue" $item)) -}}
{{- end -}}
{{- else if kindIs "map" $value -}}
{{- range $key := keys $value | sortAlpha -}}
{{- $args = append $args (printf "--%s.%s=%s=%s" $section $trait $key (include "science-gateway.argValue" (get $value $key))) -}}
{{- end -}}
{{- else if not (kindIs "invalid" $value) -}}
{{- $args = append $args (printf "--%s.%s=%s" $section $trait (include "science-gateway.argValue" $value)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* gateway.yaml: the hub's configuration in the traitlets shape {ClassName: {trait: value}}. */}}
{{- define "science-gateway.gatewayConfig" -}}
{{- $g := .Values.gateway -}}
{{- $auth := $g.authenticator -}}
{{- $cfg := dict -}}
{{- $_ := set $cfg "JupyterHub" (dict "spawner_class" "science-gateway-kubernetes" "authenticator_class" $auth.class) -}}
{{- $authSettings := deepCopy ($auth.settings | default dict) -}}
{{- if $auth.clientId -}}{{- $_ := set $authSettings "client_id" $auth.clientId -}}{{- end -}}
{{- if $authSettings -}}{{- $_ := set $cfg (include "science-gateway.authenticatorSection" $auth.class) $authSettings -}}
{{- else -}}{{- $_ := include "science-gateway.authenticatorSection" $auth.class -}}{{- end -}}
{{- $groups := $g.policy.groups | default dict -}}
{{- $pools := $g.nodePools | default dict -}}
{{- range $group := keys $groups | sortAlpha -}}
{{- range $partition := keys ((get $groups $group).partitions | default dict) | sortAlpha -}}
{{- if not (hasKey $pools $partition) -}}
{{- fail (printf "gateway.policy.groups.%s.partitions.%s: no node pool %q in gateway.nodePools (it has: %s)" $group $partition $partition (keys $pools | sortAlpha | join ", " | default "none")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "ResourcePolicy" (dict "groups" $groups) -}}
{{- $spawner := dict "node_pools" $pools -}}
{{- $args := include "science-gateway.serverArgs" . | fromJsonArray -}}
{{- if $args -}}{{- $_ := set $spawner "args" $args -}}{{- end -}}
{{- $_ := set $cfg "KubernetesSpawner" $spawner -}}
{{- if $g.dask -}}{{- $_ := set $cfg "DaskPresets" (deepCopy $g.dask) -}}{{- end -}}
{{- range $section, $traits := $g.extraConfig | default dict -}}
{{- $_ := set $cfg $section (mergeOverwrite (deepCopy (get $cfg $section | default dict)) (deepCopy $traits)) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
