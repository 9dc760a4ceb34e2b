{{- /*
  Names: this chart's objects have fixed names, like zero-to-jupyterhub's (`hub`,
  `proxy-public`), because the hub's values (jupyterhub.hub.extraEnv/extraVolumes) refer
  to them and Helm values cannot be templated. One release per namespace.
*/}}
{{- define "esap.serviceName" -}}esap-service{{- end }}
{{- define "esap.siteConfigMap" -}}esap-site{{- end }}
{{- define "esap.tokenSecret" -}}esap-tokens{{- end }}
{{- define "esap.serviceAccount" -}}esap-service{{- end }}
{{- define "esap.clusterRole" -}}{{ .Release.Namespace }}-esap-cluster-reader{{- end }}
{{- define "esap.servicePort" -}}8890{{- end }}
{{- define "esap.prefix" -}}/services/esap/{{- end }}

{{- define "esap.labels" -}}
app.kubernetes.io/name: esap-jupyterhub
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | quote }}
{{- end }}

{{- define "esap.service.selectorLabels" -}}
app.kubernetes.io/name: esap-jupyterhub
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/component: service
{{- end }}

{{- define "esap.service.image" -}}
{{ .Values.service.image.name }}:{{ .Values.service.image.tag }}
{{- end }}

{{- /* The site file the ConfigMap holds: `esap` values, verbatim. */}}
{{- define "esap.siteYaml" -}}
# Rendered by the esap-jupyterhub chart from the `esap` values; edit those, not this.
{{ toYaml .Values.esap }}
{{- end }}
