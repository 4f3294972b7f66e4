//! IngressClass ownership: which Ingresses are ours.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::Ingress;

use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::CompileOptions;
use crate::store::{Kind, ObjectKey, Store};

/// Legacy class annotation, still common on Ingresses migrated from ingress-nginx.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the IngressClass used by Ingresses that name no class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Decides ownership from the IngressClasses in the store.
pub struct ClassFilter<'a> {
    /// Names of IngressClasses whose `spec.controller` is ours.
    ours: BTreeSet<&'a str>,
    /// Every IngressClass, ours or not, with its controller.
    all: std::collections::BTreeMap<&'a str, &'a str>,
    /// One of our IngressClasses is the cluster default.
    default_is_ours: bool,
    class_name: &'a str,
    controller: &'a str,
    /// `--watch-ingress-without-class`: Ingresses that name no class are ours too.
    without_class: bool,
}

impl<'a> ClassFilter<'a> {
    pub fn new(store: &'a Store, opts: &'a CompileOptions) -> Self {
        let mut ours = BTreeSet::new();
        let mut all = std::collections::BTreeMap::new();
        let mut default_is_ours = false;
        for (key, class) in store.ingress_classes.iter() {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            all.insert(key.name.as_str(), controller.unwrap_or(""));
            if controller != Some(opts.controller_name.as_str()) {
                continue;
            }
            ours.insert(key.name.as_str());
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            default_is_ours |= is_default;
        }
        Self {
            ours,
            all,
            default_is_ours,
            class_name: &opts.ingress_class,
            controller: &opts.controller_name,
            without_class: opts.watch_ingress_without_class,
        }
    }

    /// `spec.ingressClassName` naming one of our classes, else the legacy annotation equal
    /// to our class name, else no class at all while our class is the default (or
    /// `--watch-ingress-without-class` is set).
    pub fn owns(&self, key: &ObjectKey, ingress: &Ingress) -> bool {
        if let Some(name) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            if !self.all.contains_key(name) {
                tracing::debug!(ingress = %key, class = name, "Ingress names an IngressClass that does not exist; not ours");
            }
            return self.ours.contains(name);
        }
        if let Some(legacy) = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
        {
            return legacy == self.class_name;
        }
        self.default_is_ours || self.without_class
    }

    /// Why an Ingress that is not ours is not served, and how to make it ours. Over a
    /// manifest folder every Ingress is meant for us, so none may be left out in silence;
    /// in a cluster other controllers' Ingresses are none of our business.
    pub fn explain(&self, key: &ObjectKey, ingress: &Ingress) -> Diagnostic {
        let ours = self.class_name;
        let own_class = format!(
            "an IngressClass named {ours:?} with spec.controller: {}",
            self.controller
        );
        let (field, reason, message) = if let Some(name) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            let message = match self.all.get(name) {
                Some(controller) => format!(
                    "asks for IngressClass {name:?}, whose controller is {controller:?}, not \
                     {}; not served. To serve it here, set spec.ingressClassName: {ours}",
                    self.controller
                ),
                None if name == ours => format!(
                    "asks for IngressClass {name:?}, which does not exist; not served. Add \
                     {own_class} (see manifests/20-ingressclass.yaml)"
                ),
                None => format!(
                    "asks for IngressClass {name:?}, which does not exist; not served. To \
                     serve it here, set spec.ingressClassName: {ours} and add {own_class}"
                ),
            };
            (
                "spec.ingressClassName",
                DiagnosticReason::IngressClassNotOurs,
                message,
            )
        } else if let Some(legacy) = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
        {
            (
                "metadata.annotations[kubernetes.io/ingress.class]",
                DiagnosticReason::IngressClassNotOurs,
                format!(
                    "asks for class {legacy:?}, not {ours:?}; not served. To serve it here, \
                     set the annotation to {ours:?}, or spec.ingressClassName: {ours}"
                ),
            )
        } else {
            (
                "spec.ingressClassName",
                DiagnosticReason::NoIngressClass,
                format!(
                    "not set, and no IngressClass of {} is the default; not served. Set \
                     spec.ingressClassName: {ours}, or make {ours:?} the default class \
                     (annotation {DEFAULT_CLASS_ANNOTATION}: \"true\" on {own_class}), or \
                     start with --watch-ingress-without-class to serve Ingresses that name no \
                     class, as ingress-nginx's flag of that name does",
                    self.controller
                ),
            )
        };
        Diagnostic::warning(Kind::Ingress, key, field, reason, message)
    }
}
