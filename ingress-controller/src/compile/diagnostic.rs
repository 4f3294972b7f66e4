//! What the compiler says about objects it left out or partly ignored.

use std::fmt;

use crate::store::{Kind, ObjectKey};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Served, but something was ignored or looks wrong.
    Warning,
    /// Something the object asked for is not served as asked.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// Why an object (or part of one) was left out. Stable, usable as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiagnosticReason {
    /// A rule host that is not a DNS name or `*.` wildcard.
    InvalidHost,
    /// An Ingress whose class (ingressClassName or the legacy annotation) is not ours.
    IngressClassNotOurs,
    /// An Ingress that names no class while no class of ours is the default.
    NoIngressClass,
    /// A Service whose endpoints all exist but none is ready.
    NoReadyEndpoints,
    /// A path that is not absolute or not allowed for its pathType.
    InvalidPath,
    /// A regex path (`use-regex`, `rewrite-target`, or any path of a host in regex mode)
    /// that the linear-time engine cannot run, or that is too large.
    InvalidPathRegex,
    /// A pathType other than Exact, Prefix, ImplementationSpecific.
    InvalidPathType,
    /// Two paths claim the same host+path+pathType; the newer one lost.
    DuplicatePath,
    /// Several Ingresses set `spec.defaultBackend`; the newer ones lost.
    DuplicateDefaultBackend,
    /// A backend without a Service name or port.
    InvalidBackend,
    /// `backend.resource` backends are not supported.
    UnsupportedBackend,
    /// The backend Service does not exist in the Ingress's namespace.
    ServiceNotFound,
    /// The backend Service has no such port.
    ServicePortNotFound,
    /// The Service has neither EndpointSlices nor Endpoints.
    NoEndpoints,
    /// An endpoint address that cannot be used.
    InvalidEndpoint,
    /// An `ExternalName` Service without a usable name.
    InvalidExternalName,
    /// An annotation value Portico could not parse; the annotation is ignored.
    InvalidAnnotation,
    /// An annotation Portico does not honour; it is ignored.
    UnsupportedAnnotation,
    /// A snippet annotation (raw nginx configuration): never executed.
    SnippetNotExecuted,
    /// A TLS Secret that does not exist.
    SecretNotFound,
    /// `proxy-ssl-secret` names a Secret that is missing or cannot be used.
    InvalidUpstreamTls,
    /// A TLS Secret of the wrong type.
    SecretWrongType,
    /// A TLS Secret without `tls.crt` or `tls.key`.
    SecretMissingKey,
    /// A TLS Secret whose PEM does not hold a certificate and a private key.
    InvalidCertificate,
    /// A `spec.tls` entry that serves no host.
    TlsNoHosts,
    /// Two Secrets claim one TLS host; the older Ingress's wins.
    TlsHostConflict,
    /// A TLS certificate that has expired or is not yet valid; served anyway.
    CertificateNotValidNow,
    /// A TLS certificate that does not name a host it is configured for; served anyway.
    CertificateHostMismatch,
    /// A TLS certificate that names its host only in the Common Name, with no
    /// subjectAltName; served, but browsers and Go clients reject it.
    CertificateWithoutSan,
    /// A Service field the L4 dataplane cannot use (type, clusterIP, port, policy).
    InvalidService,
    /// A Service (or port) that is valid but has nothing to serve on (no clusterIP, no
    /// nodePort, no node name for `Local`).
    ServiceNotForwarded,
    /// A Service port protocol the L4 dataplane does not forward (SCTP).
    UnsupportedProtocol,
    /// Two Service ports claim one L4 listen address; the first in name order keeps it.
    ListenAddressConflict,
    /// A `--configmap` key whose value Portico could not parse; the default applies.
    InvalidSetting,
    /// A `--configmap` key Portico does not honour; it is ignored.
    UnsupportedSetting,
    /// The ConfigMap named by `--configmap` does not exist; defaults apply.
    ConfigMapNotFound,
    /// The affinity cookie key Secret has no usable key.
    InvalidAffinityKey,
    /// Several affinity cookie key Secrets; the first in namespace order is used.
    DuplicateAffinityKey,
    /// `from-to-www-redirect` would redirect a host that an Ingress names; no redirect.
    WwwRedirectConflict,
    /// A canary Ingress path that no other Ingress routes (same host, path and
    /// pathType): not served.
    CanaryWithoutMain,
    /// A canary path whose main route already has an older canary, or whose backend is
    /// the main's own: ignored.
    CanaryConflict,
    /// A canary Ingress's `spec.defaultBackend`: never the default backend.
    CanaryDefaultBackend,
    /// A `server-alias` name that an Ingress declares as a host, that another host
    /// already has as an alias, or of a host whose aliases an older Ingress set: ignored.
    ServerAliasConflict,
    /// A security annotation or setting that is malformed, names a missing Secret, or
    /// that Portico does not implement: the paths it guards answer 503.
    SecurityRefused,
    /// A Secret that an annotation names cannot be used as asked (missing, or without
    /// the key it needs).
    AuthSecretInvalid,
    /// A Gateway API object Portico cannot serve as written (a listener protocol, match
    /// or filter type not supported yet, an invalid field).
    GatewayUnsupported,
    /// An HTTPRoute or GRPCRoute parent reference that no listener of the Gateway
    /// accepts (namespace or kind not allowed, no hostname in common, no such section or
    /// port).
    RouteNotAccepted,
    /// A Gateway API backend reference that cannot be used (wrong kind, no port, a
    /// missing Service, a namespace no ReferenceGrant opens).
    BackendRefInvalid,
    /// A Gateway HTTPS listener's certificate reference that cannot be used (wrong
    /// kind, a missing or broken Secret, a namespace no ReferenceGrant opens).
    CertificateRefInvalid,
    /// `ssl-passthrough` that cannot take effect (no `--enable-ssl-passthrough`, a
    /// wildcard or host-less rule, no `/` path): the host's TLS is terminated as usual.
    SslPassthroughNotApplied,
}

impl DiagnosticReason {
    pub fn as_str(self) -> &'static str {
        use DiagnosticReason::*;
        match self {
            InvalidHost => "invalid_host",
            IngressClassNotOurs => "ingress_class_not_ours",
            NoIngressClass => "no_ingress_class",
            NoReadyEndpoints => "no_ready_endpoints",
            InvalidPath => "invalid_path",
            InvalidPathRegex => "invalid_path_regex",
            InvalidPathType => "invalid_path_type",
            DuplicatePath => "duplicate_path",
            DuplicateDefaultBackend => "duplicate_default_backend",
            InvalidBackend => "invalid_backend",
            UnsupportedBackend => "unsupported_backend",
            ServiceNotFound => "service_not_found",
            ServicePortNotFound => "service_port_not_found",
            NoEndpoints => "no_endpoints",
            InvalidEndpoint => "invalid_endpoint",
            InvalidExternalName => "invalid_external_name",
            InvalidAnnotation => "invalid_annotation",
            UnsupportedAnnotation => "unsupported_annotation",
            SnippetNotExecuted => "snippet_not_executed",
            SecretNotFound => "secret_not_found",
            InvalidUpstreamTls => "invalid_upstream_tls",
            SecretWrongType => "secret_wrong_type",
            SecretMissingKey => "secret_missing_key",
            InvalidCertificate => "invalid_certificate",
            TlsNoHosts => "tls_no_hosts",
            TlsHostConflict => "tls_host_conflict",
            CertificateNotValidNow => "certificate_not_valid_now",
            CertificateHostMismatch => "certificate_host_mismatch",
            CertificateWithoutSan => "certificate_without_san",
            InvalidService => "invalid_service",
            ServiceNotForwarded => "service_not_forwarded",
            UnsupportedProtocol => "unsupported_protocol",
            ListenAddressConflict => "listen_address_conflict",
            InvalidSetting => "invalid_setting",
            UnsupportedSetting => "unsupported_setting",
            ConfigMapNotFound => "configmap_not_found",
            InvalidAffinityKey => "invalid_affinity_key",
            DuplicateAffinityKey => "duplicate_affinity_key",
            WwwRedirectConflict => "www_redirect_conflict",
            CanaryWithoutMain => "canary_without_main",
            CanaryConflict => "canary_conflict",
            CanaryDefaultBackend => "canary_default_backend",
            ServerAliasConflict => "server_alias_conflict",
            SecurityRefused => "security_refused",
            AuthSecretInvalid => "auth_secret_invalid",
            GatewayUnsupported => "gateway_unsupported",
            RouteNotAccepted => "route_not_accepted",
            BackendRefInvalid => "backend_ref_invalid",
            CertificateRefInvalid => "certificate_ref_invalid",
            SslPassthroughNotApplied => "ssl_passthrough_not_applied",
        }
    }
}

impl fmt::Display for DiagnosticReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding about one object: which object, which field, why, in words.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub severity: Severity,
    pub kind: Kind,
    pub object: ObjectKey,
    /// Path of the offending field, e.g. `spec.rules[0].http.paths[1].backend.service.port.name`;
    /// empty when the whole object is meant.
    pub field: String,
    pub reason: DiagnosticReason,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        kind: Kind,
        object: &ObjectKey,
        field: impl Into<String>,
        reason: DiagnosticReason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            kind,
            object: object.clone(),
            field: field.into(),
            reason,
            message: message.into(),
        }
    }

    pub fn warning(
        kind: Kind,
        object: &ObjectKey,
        field: impl Into<String>,
        reason: DiagnosticReason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(kind, object, field, reason, message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.kind, self.object)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_object_and_field() {
        let d = Diagnostic::error(
            Kind::Ingress,
            &ObjectKey::new("default", "kubia"),
            "spec.rules[0].http.paths[0].backend.service.port.name",
            DiagnosticReason::ServicePortNotFound,
            "service \"kubia\" has no port named \"http\"",
        );
        assert_eq!(
            d.to_string(),
            "Ingress default/kubia: spec.rules[0].http.paths[0].backend.service.port.name: \
             service \"kubia\" has no port named \"http\""
        );
        let whole = Diagnostic::warning(
            Kind::Service,
            &ObjectKey::new("default", "kubia"),
            "",
            DiagnosticReason::NoEndpoints,
            "no EndpointSlices",
        );
        assert_eq!(
            whole.to_string(),
            "Service default/kubia: no EndpointSlices"
        );
        assert_eq!(whole.reason.as_str(), "no_endpoints");
    }
}
