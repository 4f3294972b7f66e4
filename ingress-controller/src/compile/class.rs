//! IngressClass ownership: which Ingresses are ours.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::Ingress;

use super::CompileOptions;
use crate::store::{ObjectKey, Store};

/// Legacy class annotation, still common on Ingresses migrated from ingress-nginx.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the IngressClass used by Ingresses that name no class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Decides ownership from the IngressClasses in the store.
pub struct ClassFilter<'a> {
    /// Names of IngressClasses whose `spec.controller` is ours.
    ours: BTreeSet<&'a str>,
    /// Names of every IngressClass, ours or not.
    all: BTreeSet<&'a str>,
    /// One of our IngressClasses is the cluster default.
    default_is_ours: bool,
    class_name: &'a str,
}

impl<'a> ClassFilter<'a> {
    pub fn new(store: &'a Store, opts: &'a CompileOptions) -> Self {
        let mut ours = BTreeSet::new();
        let mut all = BTreeSet::new();
        let mut default_is_ours = false;
        for (key, class) in store.ingress_classes.iter() {
            all.insert(key.name.as_str());
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
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
        }
    }

    /// `spec.ingressClassName` naming one of our classes, else the legacy annotation equal
    /// to our class name, else no class at all while our class is the default.
    pub fn owns(&self, key: &ObjectKey, ingress: &Ingress) -> bool {
        if let Some(name) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            if !self.all.contains(name) {
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
        self.default_is_ours
    }
}
