//! The common route lookup must not allocate: checked with a counting global allocator.
//! (Its own test binary, so the allocator hook touches nothing else.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use proxy_core::routes::{
    normalize_path, request_host, HostMatch, PathType, RouteRule, RouteTable, RouteTarget,
};
use proxy_core::BackendId;

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's allocations.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn rule(host: HostMatch, path: &str, path_type: PathType, service: &str) -> RouteRule {
    RouteRule {
        host,
        path: path.to_owned(),
        path_type,
        target: RouteTarget {
            backend: BackendId::new("default", service, "http"),
            policy: Default::default(),
            source: "default/ing".into(),
        },
    }
}

fn table() -> RouteTable {
    let mut rules = vec![
        rule(HostMatch::Any, "/", PathType::Prefix, "default"),
        rule(
            HostMatch::parse(Some("*.example.com")).unwrap(),
            "/",
            PathType::Prefix,
            "wild",
        ),
    ];
    for i in 0..1000 {
        let host = HostMatch::parse(Some(&format!("app{i}.example.com"))).unwrap();
        rules.push(rule(host.clone(), "/api/v1", PathType::Prefix, "api"));
        rules.push(rule(host, "/health", PathType::Exact, "health"));
    }
    RouteTable::build(rules)
}

#[test]
fn lookup_does_not_allocate() {
    let table = table();
    let cases = [
        ("app7.example.com", "/api/v1/users/42", "api"),
        ("app7.example.com", "/health", "health"),
        ("app7.example.com", "/other/deep/path/", "wild"),
        ("x.example.com", "/api", "wild"),
        ("nobody.org", "/a/b/c/d/e/f/g", "default"),
        ("", "/", "default"),
    ];
    for (host, path, want) in cases {
        let mut got = None;
        let n =
            allocations_in(|| got = table.lookup(host, path).map(|t| t.backend.service.clone()));
        assert_eq!(got.as_deref(), Some(want), "{host}{path}");
        assert_eq!(n, 0, "lookup({host}, {path}) allocated {n} times");
    }
    // The counter works: building does allocate.
    assert!(allocations_in(|| drop(self::table())) > 0);
}

#[test]
fn request_normalization_does_not_allocate_for_canonical_requests() {
    let table = table();
    let (parts, ()) = http::Request::builder()
        .uri("/api/v1/users?page=2")
        .header(http::header::HOST, "app7.example.com:8080")
        .body(())
        .unwrap()
        .into_parts();
    let mut service = None;
    let n = allocations_in(|| {
        let host = request_host(&parts);
        let path = normalize_path(parts.uri.path());
        assert!(matches!(host, Some(Cow::Borrowed(_))));
        assert!(matches!(path, Ok(Cow::Borrowed(_))));
        service = table
            .lookup_request(&parts)
            .ok()
            .flatten()
            .map(|t| t.backend.service.len());
    });
    assert_eq!(service, Some("api".len()));
    assert_eq!(n, 0, "normalization + lookup allocated {n} times");
}
