//! Admission latency at cluster scale: one AdmissionReview (JSON in, JSON out, the
//! candidate compiled against the store) with 10,000 Ingresses in the store, timed one by
//! one so the tail shows. Reports p50, p99 and the maximum per kind of request:
//!
//! - `new host`: a new Ingress on a host nobody uses (admitted);
//! - `conflict`: a new Ingress claiming a path an older one holds (denied);
//! - `edit with TLS`: an update of an existing Ingress that has a TLS Secret, checked
//!   again (admitted);
//! - `snippet`: a new Ingress with a snippet annotation (denied).
//!
//! `cargo bench -p ingress-controller --bench admission`

mod support;

use std::time::{Duration, Instant};

use ingress_controller::admission::review::{review, Outcome};
use ingress_controller::compile::CompileOptions;
use ingress_controller::store::Object;
use serde_json::{json, Value};
use support::{ingress, store, TLS_EVERY};

#[global_allocator]
static ALLOC: ingress_controller::alloc::MiMalloc = ingress_controller::alloc::MiMalloc;

const INGRESSES: usize = 10_000;
const ROUNDS: usize = 2_000;

fn body(object: Value, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000000",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "operation": operation,
            "namespace": object["metadata"]["namespace"].clone(),
            "name": object["metadata"]["name"].clone(),
            "userInfo": {"username": "bench"},
            "object": object
        }
    }))
    .expect("bench body")
}

fn as_json(obj: Object) -> Value {
    let Object::Ingress(mut ing) = obj else {
        unreachable!("support::ingress makes Ingresses")
    };
    ing.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let mut v = serde_json::to_value(ing).expect("ingress json");
    v["apiVersion"] = json!("networking.k8s.io/v1");
    v["kind"] = json!("Ingress");
    v
}

/// A new Ingress for an existing app (its Service and, for 1 in 10, its TLS Secret) on a
/// host nobody uses.
fn on_new_host(r: usize) -> Value {
    let mut v = as_json(ingress(r * 7 % INGRESSES, 5));
    let host = json!(format!("new-{r}.example.com"));
    v["metadata"]["name"] = json!(format!("candidate-{r}"));
    v["spec"]["rules"][0]["host"] = host.clone();
    if v["spec"]["tls"].is_array() {
        v["spec"]["tls"][0]["hosts"] = json!([host]);
    }
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn main() {
    let started = Instant::now();
    let store = store(INGRESSES);
    let opts = CompileOptions::default();
    eprintln!(
        "store: {INGRESSES} Ingresses built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    type Case = (&'static str, Outcome, Box<dyn Fn(usize) -> Vec<u8>>);
    let cases: Vec<Case> = vec![
        (
            "new host",
            Outcome::Allowed,
            Box::new(|r| body(on_new_host(r), "CREATE")),
        ),
        (
            "conflict",
            Outcome::Denied,
            Box::new(|r| {
                let mut v = as_json(ingress(r * 7 % INGRESSES, 5));
                v["metadata"]["name"] = json!(format!("candidate-{r}"));
                body(v, "CREATE")
            }),
        ),
        (
            "edit with TLS",
            Outcome::Allowed,
            Box::new(|r| {
                let i = (r * TLS_EVERY * 3) % INGRESSES;
                body(as_json(ingress(i, 6)), "UPDATE")
            }),
        ),
        (
            "snippet",
            Outcome::Denied,
            Box::new(|r| {
                let mut v = on_new_host(r);
                v["metadata"]["annotations"] =
                    json!({"nginx.ingress.kubernetes.io/server-snippet": "location / {}"});
                body(v, "CREATE")
            }),
        ),
    ];
    println!("| request | p50 | p99 | max |");
    println!("|---|---|---|---|");
    let mut all = Vec::new();
    for (name, want, make) in &cases {
        let bodies: Vec<Vec<u8>> = (0..ROUNDS).map(make).collect();
        let mut times = Vec::with_capacity(ROUNDS);
        for b in &bodies {
            let t = Instant::now();
            let reviewed = review(&store, &opts, b).expect("a review");
            times.push(t.elapsed());
            assert_eq!(reviewed.outcome, *want, "{name}: {:?}", reviewed.review);
        }
        times.sort_unstable();
        all.extend_from_slice(&times);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.99)),
            ms(times[times.len() - 1])
        );
    }
    all.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| all ({} reviews) | {:.3} ms | {:.3} ms | {:.3} ms |",
        all.len(),
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
        ms(all[all.len() - 1])
    );
}
