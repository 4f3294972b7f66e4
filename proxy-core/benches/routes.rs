//! Route lookup at 10, 1,000 and 100,000 rules: a hit, a miss, a wildcard host and a
//! deep prefix. Run with `cargo bench -p proxy-core --bench routes`; add `-- --quick` for
//! a short run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proxy_core::routes::{HostMatch, PathType, RouteRule, RouteTable, RouteTarget};
use proxy_core::BackendId;

fn rule(host: HostMatch, path: &str, path_type: PathType, service: &str) -> RouteRule {
    RouteRule {
        host,
        path: path.to_owned(),
        path_type,
        target: RouteTarget {
            backend: BackendId::new("bench", service, "http"),
            policy: Default::default(),
            source: "bench/ingress".into(),
        },
    }
}

/// `n` rules shaped like a large cluster: many hosts with a handful of paths each
/// (mixed Exact/Prefix, one deep prefix), a few wildcard hosts, and host-less rules.
fn table(n: usize) -> RouteTable {
    const PER_HOST: usize = 5;
    let mut rules = Vec::with_capacity(n);
    rules.push(rule(HostMatch::Any, "/", PathType::Prefix, "default"));
    rules.push(rule(HostMatch::Any, "/healthz", PathType::Exact, "health"));
    rules.push(rule(
        HostMatch::parse(Some("*.wild0.example.com")).unwrap(),
        "/",
        PathType::Prefix,
        "wild",
    ));
    let mut host = 0;
    while rules.len() < n {
        let h = HostMatch::parse(Some(&format!("app{host}.example.com"))).unwrap();
        let paths: [(&str, PathType); PER_HOST] = [
            ("/", PathType::Prefix),
            ("/api", PathType::Prefix),
            ("/api/v1/users", PathType::Prefix),
            ("/login", PathType::Exact),
            ("/static/assets/img/icons/v2", PathType::Prefix),
        ];
        for (path, ty) in paths {
            if rules.len() == n {
                break;
            }
            rules.push(rule(h.clone(), path, ty, &format!("svc{host}")));
        }
        host += 1;
    }
    let table = RouteTable::build(rules);
    assert_eq!(table.len(), n);
    table
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [10, 1_000, 100_000] {
        let table = table(n);
        // Host in the middle of the table (the last one for small tables).
        let hosts = n.div_ceil(5).saturating_sub(1);
        let host = format!("app{}.example.com", hosts / 2);
        let cases: [(&str, &str, &str); 4] = [
            ("hit", &host, "/api/v1/users/42"),
            ("miss", "nobody.example.org", "/nowhere"),
            ("wildcard_host", "x.wild0.example.com", "/some/page"),
            (
                "deep_prefix",
                &host,
                "/static/assets/img/icons/v2/social/small/logo.png",
            ),
        ];
        for (name, host, path) in cases {
            // Make sure each case exercises what its name says.
            let found = table
                .lookup(host, path)
                .map(|t| t.backend.service.to_string());
            let expected = match name {
                "miss" => "default".to_owned(),
                "wildcard_host" => "wild".to_owned(),
                _ => format!("svc{}", hosts / 2),
            };
            assert_eq!(found.as_deref(), Some(expected.as_str()), "{name} at {n}");
            group.bench_with_input(
                BenchmarkId::new(name, n),
                &(host, path),
                |b, &(host, path)| b.iter(|| table.lookup(black_box(host), black_box(path))),
            );
        }
        // A true miss: no host-less catch-all either.
        let strict = RouteTable::build(
            table
                .rules()
                .into_iter()
                .filter(|r| r.host != HostMatch::Any)
                .cloned()
                .collect(),
        );
        assert!(strict.lookup("nobody.example.org", "/nowhere").is_none());
        group.bench_with_input(BenchmarkId::new("miss_no_default", n), &strict, |b, t| {
            b.iter(|| t.lookup(black_box("nobody.example.org"), black_box("/nowhere")))
        });
    }
    group.finish();

    // Baseline: one probe of a std HashMap with a host-sized key. The machine these run
    // on is shared; lookup figures read best as a multiple of this one.
    let map: std::collections::HashMap<String, usize> = (0..100_000)
        .map(|i| (format!("app{i}.example.com"), i))
        .collect();
    c.bench_function("baseline/std_hashmap_get", |b| {
        b.iter(|| map.get(black_box("app49999.example.com")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
