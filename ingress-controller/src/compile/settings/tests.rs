//! The settings parsers one by one, then whole compiles from YAML fixtures.

use std::str::FromStr;

use super::*;
use crate::compile::tests::{fixture, store_from_yaml};
use crate::compile::{compile, CompileOptions, Compiled, Severity};

fn key() -> ObjectKey {
    ObjectKey::new("portico", "portico")
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The settings for `pairs`, and what was said about them as (field, reason, severity).
fn parse(pairs: &[(&str, &str)]) -> (GlobalSettings, Vec<(String, DiagnosticReason, Severity)>) {
    let mut diags = Vec::new();
    let s = parse_settings(&key(), Some(&data(pairs)), &mut diags);
    let said = diags
        .into_iter()
        .map(|d| {
            assert_eq!(d.kind, Kind::ConfigMap);
            assert_eq!(d.object, key());
            (d.field, d.reason, d.severity)
        })
        .collect();
    (s, said)
}

fn net(s: &str) -> IpNet {
    IpNet::from_str(s).unwrap()
}

#[test]
fn defaults_are_ingress_nginx_defaults() {
    let s = GlobalSettings::default();
    assert!(!s.use_forwarded_headers);
    assert!(!s.compute_full_forwarded_for);
    assert_eq!(s.forwarded_for_header.as_str(), "x-forwarded-for");
    assert_eq!(s.proxy_real_ip_cidr, vec![net("0.0.0.0/0")]);
    assert!(!s.use_proxy_protocol);
    assert_eq!(s.proxy_connect_timeout, Duration::from_secs(5));
    assert_eq!(s.proxy_read_timeout, Duration::from_secs(60));
    assert_eq!(s.proxy_send_timeout, Duration::from_secs(60));
    assert_eq!(s.proxy_body_size, Some(1 << 20));
    assert_eq!(s.client_body_timeout, Duration::from_secs(60));
    assert!(s.ssl_redirect);
    assert!(s.hsts);
    assert_eq!(s.hsts_max_age, Duration::from_secs(31_536_000));
    assert!(s.hsts_include_subdomains);
    assert!(!s.hsts_preload);
    assert!(!s.server_tokens);
    assert_eq!(s.upstream_keepalive.connections, 320);
    assert_eq!(s.upstream_keepalive.timeout, Duration::from_secs(60));
    assert_eq!(s.upstream_keepalive.requests, 10_000);
    assert_eq!(s.upstream_keepalive.time, Duration::from_secs(3600));
    // No data, an empty ConfigMap and no ConfigMap at all are the same.
    assert_eq!(parse(&[]), (GlobalSettings::default(), Vec::new()));
    let mut diags = Vec::new();
    assert_eq!(
        parse_settings(&key(), None, &mut diags),
        GlobalSettings::default()
    );
    assert!(diags.is_empty());
}

#[test]
fn booleans_follow_go_parse_bool() {
    for (name, get) in [
        (
            "use-forwarded-headers",
            (|s: &GlobalSettings| s.use_forwarded_headers) as fn(&GlobalSettings) -> bool,
        ),
        ("compute-full-forwarded-for", |s| {
            s.compute_full_forwarded_for
        }),
        ("use-proxy-protocol", |s| s.use_proxy_protocol),
        ("ssl-redirect", |s| s.ssl_redirect),
        ("hsts", |s| s.hsts),
        ("hsts-include-subdomains", |s| s.hsts_include_subdomains),
        ("hsts-preload", |s| s.hsts_preload),
        ("server-tokens", |s| s.server_tokens),
    ] {
        let default = get(&GlobalSettings::default());
        for (raw, want) in [
            ("true", true),
            ("T", true),
            ("1", true),
            ("FALSE", false),
            ("0", false),
            (" f ", false),
        ] {
            let (s, said) = parse(&[(name, raw)]);
            assert_eq!(get(&s), want, "{name}={raw:?}");
            assert!(said.is_empty(), "{name}={raw:?}: {said:?}");
        }
        for raw in ["yes", "on", "", "2"] {
            let (s, said) = parse(&[(name, raw)]);
            assert_eq!(get(&s), default, "{name}={raw:?} keeps the default");
            assert_eq!(
                said,
                vec![(
                    format!("data[{name:?}]"),
                    DiagnosticReason::InvalidSetting,
                    Severity::Error
                )],
                "{name}={raw:?}"
            );
        }
    }
}

#[test]
fn timeouts_are_whole_seconds() {
    for (name, get) in [
        (
            "proxy-connect-timeout",
            (|s: &GlobalSettings| s.proxy_connect_timeout) as fn(&GlobalSettings) -> Duration,
        ),
        ("proxy-read-timeout", |s| s.proxy_read_timeout),
        ("proxy-send-timeout", |s| s.proxy_send_timeout),
        ("client-body-timeout", |s| s.client_body_timeout),
    ] {
        let (s, said) = parse(&[(name, "42")]);
        assert_eq!(get(&s), Duration::from_secs(42), "{name}");
        assert!(said.is_empty());
        let default = get(&GlobalSettings::default());
        for raw in ["0", "-1", "1.5", "60s", "", "86401"] {
            let (s, said) = parse(&[(name, raw)]);
            assert_eq!(get(&s), default, "{name}={raw:?}");
            assert_eq!(said.len(), 1, "{name}={raw:?}");
            assert_eq!(said[0].1, DiagnosticReason::InvalidSetting);
        }
    }
}

#[test]
fn body_size_takes_nginx_sizes() {
    assert_eq!(parse_size("0"), Ok(None));
    assert_eq!(parse_size("0m"), Ok(None));
    assert_eq!(parse_size("512"), Ok(Some(512)));
    assert_eq!(parse_size("8k"), Ok(Some(8 << 10)));
    assert_eq!(parse_size("8K"), Ok(Some(8 << 10)));
    assert_eq!(parse_size("20m"), Ok(Some(20 << 20)));
    assert_eq!(parse_size("20M"), Ok(Some(20 << 20)));
    assert_eq!(parse_size("2g"), Ok(Some(2 << 30)));
    assert_eq!(parse_size("2G"), Ok(Some(2 << 30)));
    for bad in [
        "",
        "m",
        "1.5m",
        "-1",
        "1t",
        "1mb",
        " 1m",
        "99999999999999999999g",
        "20000000000g",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
    let (s, said) = parse(&[("proxy-body-size", "0")]);
    assert_eq!(s.proxy_body_size, None);
    assert!(said.is_empty());
    let (s, said) = parse(&[("proxy-body-size", "lots")]);
    assert_eq!(s.proxy_body_size, Some(1 << 20));
    assert_eq!(said[0].0, "data[\"proxy-body-size\"]");
}

#[test]
fn real_ip_cidrs_are_v4_and_v6_lists() {
    assert_eq!(
        parse_cidrs("10.0.0.0/8,fd00::/8"),
        Ok(vec![net("10.0.0.0/8"), net("fd00::/8")])
    );
    assert_eq!(
        parse_cidrs(" 192.168.1.7/24 , 2001:db8::1 ,10.1.2.3"),
        Ok(vec![
            net("192.168.1.0/24"),
            net("2001:db8::1/128"),
            net("10.1.2.3/32")
        ])
    );
    for bad in [
        "",
        "10.0.0.0/33",
        "10.0.0.0/8,",
        "example.com",
        "10.0.0/8",
        "fd00::/129",
    ] {
        assert!(parse_cidrs(bad).is_err(), "{bad:?}");
    }
    let (s, said) = parse(&[("proxy-real-ip-cidr", "10.0.0.0/8,nope")]);
    assert_eq!(s.proxy_real_ip_cidr, vec![net("0.0.0.0/0")]);
    assert_eq!(said.len(), 1);
}

#[test]
fn forwarded_for_header_must_be_a_header_name() {
    let (s, said) = parse(&[("forwarded-for-header", "X-Original-Forwarded-For")]);
    assert_eq!(s.forwarded_for_header.as_str(), "x-original-forwarded-for");
    assert!(said.is_empty());
    for bad in ["", "X Forwarded", "X-Forwarded:For", "é"] {
        assert!(parse_header_name(bad).is_err(), "{bad:?}");
        let (s, said) = parse(&[("forwarded-for-header", bad)]);
        assert_eq!(s.forwarded_for_header.as_str(), "x-forwarded-for");
        assert_eq!(said.len(), 1, "{bad:?}");
    }
}

#[test]
fn redirect_settings_take_ingress_nginx_values() {
    let s = GlobalSettings::default();
    assert_eq!(s.http_redirect_code, 308);
    assert!(!s.preserve_trailing_slash);
    assert!(!s.use_port_in_redirects);
    let (s, said) = parse(&[
        ("http-redirect-code", "301"),
        ("preserve-trailing-slash", "true"),
        ("use-port-in-redirects", "true"),
    ]);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(s.http_redirect_code, 301);
    assert!(s.preserve_trailing_slash && s.use_port_in_redirects);
    let p = s.policy_defaults();
    assert_eq!(p.http_redirect_code, http::StatusCode::MOVED_PERMANENTLY);
    assert!(p.preserve_trailing_slash && p.use_port_in_redirects);
    // ingress-nginx accepts only 301, 302, 307 and 308 there.
    for bad in ["303", "200", "x", ""] {
        let (s, said) = parse(&[("http-redirect-code", bad)]);
        assert_eq!(s.http_redirect_code, 308, "{bad}");
        assert_eq!(said.len(), 1, "{bad}");
        assert_eq!(said[0].1, DiagnosticReason::InvalidSetting);
    }
}

#[test]
fn hsts_max_age_is_seconds_including_zero() {
    assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
    assert_eq!(parse_seconds("600"), Ok(Duration::from_secs(600)));
    for bad in ["", "-1", "1y", "1e6", "99999999999999999999999"] {
        assert!(parse_seconds(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn unknown_keys_and_snippets_are_warnings() {
    let (s, said) = parse(&[
        ("enable-brotli", "true"),
        ("allow-snippet-annotations", "true"),
        ("server-tokens", "true"),
    ]);
    assert!(s.server_tokens, "known keys still apply");
    assert_eq!(
        said,
        vec![
            (
                "data[\"allow-snippet-annotations\"]".to_owned(),
                DiagnosticReason::UnsupportedSetting,
                Severity::Warning
            ),
            (
                "data[\"enable-brotli\"]".to_owned(),
                DiagnosticReason::UnsupportedSetting,
                Severity::Warning
            ),
        ]
    );
    let (_, said) = parse(&[("allow-snippet-annotations", "false")]);
    assert!(said.is_empty());
    let (_, said) = parse(&[("allow-snippet-annotations", "sure")]);
    assert_eq!(said[0].1, DiagnosticReason::InvalidSetting);
}

#[test]
fn messages_name_the_key_and_what_was_expected() {
    let mut diags = Vec::new();
    parse_settings(
        &key(),
        Some(&data(&[("proxy-body-size", "1t")])),
        &mut diags,
    );
    let msg = diags[0].to_string();
    assert!(msg.contains("proxy-body-size"), "{msg}");
    assert!(msg.contains("\"1t\""), "{msg}");
    assert!(msg.contains("expected a size"), "{msg}");
}

#[test]
fn affinity_keys_are_32_hex_digits() {
    let want = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];
    assert_eq!(decode_key(b"00112233445566778899aabbccddeeff"), Some(want));
    assert_eq!(
        decode_key(b"00112233445566778899AABBCCDDEEFF\n"),
        Some(want)
    );
    assert_eq!(encode_key(&want), "00112233445566778899aabbccddeeff");
    for bad in [
        &b""[..],
        b"00112233445566778899aabbccddeeff00",
        b"00112233445566778899aabbccddee",
        b"00112233445566778899aabbccddeefg",
        b"0011 2233445566778899aabbccddeeff",
        b"+0112233445566778899aabbccddeeff",
    ] {
        assert_eq!(decode_key(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

fn opts() -> CompileOptions {
    CompileOptions {
        configmap: Some(key()),
        ..CompileOptions::default()
    }
}

fn said_about(c: &Compiled, kind: Kind) -> Vec<(ObjectKey, String, DiagnosticReason, Severity)> {
    c.diagnostics
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| (d.object.clone(), d.field.clone(), d.reason, d.severity))
        .collect()
}

#[test]
fn compile_reads_the_named_configmap_and_the_affinity_key() {
    let c = compile(&fixture("settings.yaml"), &opts());
    let s = &c.settings;
    assert!(s.use_forwarded_headers);
    assert!(s.compute_full_forwarded_for);
    assert_eq!(s.forwarded_for_header.as_str(), "x-real-client");
    assert_eq!(
        s.proxy_real_ip_cidr,
        vec![net("10.0.0.0/8"), net("fd00::/8")]
    );
    assert!(!s.use_proxy_protocol);
    assert_eq!(s.proxy_connect_timeout, Duration::from_secs(3));
    assert_eq!(s.proxy_read_timeout, Duration::from_secs(120));
    assert_eq!(s.proxy_send_timeout, Duration::from_secs(30));
    assert_eq!(s.proxy_body_size, Some(8 << 20));
    assert_eq!(s.client_body_timeout, Duration::from_secs(10));
    assert!(!s.ssl_redirect);
    assert!(s.hsts);
    assert_eq!(s.hsts_max_age, Duration::from_secs(600));
    assert!(!s.hsts_include_subdomains);
    assert!(s.hsts_preload);
    assert!(s.server_tokens);
    assert_eq!(
        c.affinity_key,
        decode_key(b"00112233445566778899aabbccddeeff")
    );
    // The other ConfigMap and the TLS Secret of the same name are not read.
    assert!(
        said_about(&c, Kind::ConfigMap).is_empty(),
        "{:?}",
        c.diagnostics
    );
    assert!(
        said_about(&c, Kind::Secret).is_empty(),
        "{:?}",
        c.diagnostics
    );

    // Without --configmap, the defaults, whatever ConfigMaps exist.
    let c = compile(&fixture("settings.yaml"), &CompileOptions::default());
    assert_eq!(c.settings, GlobalSettings::default());
    assert!(c.affinity_key.is_some());
}

#[test]
fn a_missing_configmap_is_a_warning_and_defaults() {
    let c = compile(&store_from_yaml(""), &opts());
    assert_eq!(c.settings, GlobalSettings::default());
    assert_eq!(
        said_about(&c, Kind::ConfigMap),
        vec![(
            key(),
            String::new(),
            DiagnosticReason::ConfigMapNotFound,
            Severity::Warning
        )]
    );
    assert_eq!(c.affinity_key, None);
    assert!(said_about(&c, Kind::Secret).is_empty());
}

#[test]
fn a_malformed_configmap_keeps_the_good_keys_and_defaults_the_rest() {
    let store = store_from_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {namespace: portico, name: portico}
data:
  proxy-body-size: 10x
  proxy-read-timeout: "300"
  hsts: maybe
  relative-redirects: "true"
"#,
    );
    let c = compile(&store, &opts());
    let want = GlobalSettings {
        proxy_read_timeout: Duration::from_secs(300),
        ..GlobalSettings::default()
    };
    assert_eq!(c.settings, want);
    assert_eq!(
        said_about(&c, Kind::ConfigMap),
        vec![
            (
                key(),
                "data[\"hsts\"]".to_owned(),
                DiagnosticReason::InvalidSetting,
                Severity::Error
            ),
            (
                key(),
                "data[\"proxy-body-size\"]".to_owned(),
                DiagnosticReason::InvalidSetting,
                Severity::Error
            ),
            (
                key(),
                "data[\"relative-redirects\"]".to_owned(),
                DiagnosticReason::UnsupportedSetting,
                Severity::Warning
            ),
        ]
    );
}

fn affinity_secret(ns: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{namespace: {ns}, name: portico-affinity-key}}\ntype: Opaque\n{data}\n---\n"
    )
}

#[test]
fn a_malformed_affinity_secret_is_an_error_naming_the_field() {
    let key_field = "data[\"key\"]".to_owned();
    let secret_key = ObjectKey::new("portico", AFFINITY_KEY_SECRET);
    for data in [
        "data: {}",
        "data: {other: MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY=}",
        // "0011223344" : too short.
        "data: {key: MDAxMTIyMzM0NA==}",
    ] {
        let c = compile(&store_from_yaml(&affinity_secret("portico", data)), &opts());
        assert_eq!(c.affinity_key, None, "{data}");
        assert_eq!(
            said_about(&c, Kind::Secret),
            vec![(
                secret_key.clone(),
                key_field.clone(),
                DiagnosticReason::InvalidAffinityKey,
                Severity::Error
            )],
            "{data}"
        );
        let msg = c
            .diagnostics
            .iter()
            .find(|d| d.kind == Kind::Secret)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(msg.contains("portico/portico-affinity-key"), "{msg}");
    }
}

#[test]
fn several_affinity_secrets_use_the_first_namespace() {
    let first = "data: {key: MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY=}";
    // "ffeeddccbbaa99887766554433221100"
    let second = "data: {key: ZmZlZWRkY2NiYmFhOTk4ODc3NjY1NTQ0MzMyMjExMDA=}";
    let text = affinity_secret("b", second) + &affinity_secret("a", first);
    let c = compile(&store_from_yaml(&text), &CompileOptions::default());
    assert_eq!(
        c.affinity_key,
        decode_key(b"00112233445566778899aabbccddeeff")
    );
    assert_eq!(
        said_about(&c, Kind::Secret),
        vec![(
            ObjectKey::new("b", AFFINITY_KEY_SECRET),
            String::new(),
            DiagnosticReason::DuplicateAffinityKey,
            Severity::Warning
        )]
    );
}

#[test]
fn custom_http_errors_keep_the_good_codes() {
    let (s, said) = parse(&[("custom-http-errors", "404, 503,415,404")]);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(s.custom_http_errors, vec![404, 415, 503]);
    assert_eq!(s.policy_defaults().custom_http_errors, vec![404, 415, 503]);
    // ingress-nginx's ConfigMap reader: 300 to 599, bad items skipped with a warning.
    let (s, said) = parse(&[("custom-http-errors", "301,abc,200,600,502")]);
    assert_eq!(s.custom_http_errors, vec![301, 502]);
    assert_eq!(
        said,
        vec![(
            "data[\"custom-http-errors\"]".to_owned(),
            DiagnosticReason::InvalidSetting,
            Severity::Warning
        )]
    );
    assert!(GlobalSettings::default().custom_http_errors.is_empty());
}

#[test]
fn source_ranges_are_lists_and_a_bad_one_fails_closed() {
    let store = store_from_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {namespace: portico, name: portico}
data:
  whitelist-source-range: "10.0.0.0/8, 192.0.2.3/24 ,2001:db8::/32"
  denylist-source-range: "10.0.0.0/8,nope"
"#,
    );
    let c = compile(&store, &opts());
    let nets: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        c.settings.whitelist_source_range,
        GlobalRanges::Ranges(nets)
    );
    let GlobalRanges::Broken(why) = &c.settings.denylist_source_range else {
        panic!("{:?}", c.settings.denylist_source_range)
    };
    assert!(
        why.contains("denylist-source-range") && why.contains("nope"),
        "{why}"
    );
    assert_eq!(
        said_about(&c, Kind::ConfigMap),
        vec![(
            key(),
            "data[\"denylist-source-range\"]".to_owned(),
            DiagnosticReason::SecurityRefused,
            Severity::Error
        )]
    );
}

#[test]
fn tls_protocols_and_ciphers_keep_what_portico_offers() {
    assert_eq!(
        parse_ssl_protocols("TLSv1.2 TLSv1.3"),
        (Some((true, true)), vec![])
    );
    assert_eq!(
        parse_ssl_protocols("TLSv1 TLSv1.1 TLSv1.3"),
        (Some((false, true)), vec!["TLSv1", "TLSv1.1"])
    );
    assert_eq!(
        parse_ssl_protocols("SSLv3 TLSv1"),
        (None, vec!["SSLv3", "TLSv1"])
    );
    // ingress-nginx's default list: the DHE suites are not offered.
    let (suites, refused) = parse_ssl_ciphers(
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384",
    );
    assert_eq!(suites.len(), 6);
    assert_eq!(
        refused,
        ["DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"]
    );
    let (suites, refused) = parse_ssl_ciphers("ECDHE-RSA-AES256-GCM-SHA384:HIGH:!aNULL");
    assert_eq!(
        suites,
        [tls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
    );
    assert_eq!(refused, ["HIGH"]);

    let store = store_from_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {namespace: portico, name: portico}
data:
  ssl-protocols: "TLSv1.1 TLSv1.3"
  ssl-ciphers: "AES128-SHA"
"#,
    );
    let c = compile(&store, &opts());
    assert_eq!(
        c.settings.tls,
        tls::TlsPolicy {
            tls12: false,
            tls13: true,
            tls12_suites: None
        }
    );
    let said = said_about(&c, Kind::ConfigMap);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said
        .iter()
        .all(|(_, _, r, s)| *r == DiagnosticReason::InvalidSetting && *s == Severity::Warning));
    let texts: Vec<String> = c.diagnostics.iter().map(|d| d.message.clone()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("ssl-protocols") && t.contains("TLSv1.1")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("ssl-ciphers") && t.contains("AES128-SHA")),
        "{texts:?}"
    );
}

#[test]
fn global_auth_is_read_and_a_broken_one_fails_closed() {
    let store = store_from_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {namespace: portico, name: portico}
data:
  global-auth-url: "http://auth.example.com/check"
  global-auth-method: "POST"
  global-auth-response-headers: "X-User"
  no-auth-locations: "/public, /health"
  enable-modsecurity: "false"
"#,
    );
    let c = compile(&store, &opts());
    let GlobalAuth::On(auth) = &c.settings.global_auth else {
        panic!("{:?}", c.settings.global_auth);
    };
    assert_eq!(auth.method, Some(http::Method::POST));
    assert_eq!(auth.response_headers.len(), 1);
    assert_eq!(c.settings.no_auth_locations, ["/public", "/health"]);
    assert!(
        c.settings.refused.is_empty(),
        "modsecurity off asks for nothing"
    );
    assert!(said_about(&c, Kind::ConfigMap).is_empty());
    assert_eq!(
        GlobalSettings::default().no_auth_locations,
        ["/.well-known/acme-challenge"]
    );

    let store = store_from_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {namespace: portico, name: portico}
data:
  global-auth-url: "http://auth.example.com/check"
  global-auth-method: "get"
"#,
    );
    let c = compile(&store, &opts());
    assert!(
        matches!(&c.settings.global_auth, GlobalAuth::Broken(why) if why.contains("global-auth-method")),
        "{:?}",
        c.settings.global_auth
    );
    assert_eq!(
        said_about(&c, Kind::ConfigMap),
        vec![(
            key(),
            "data[\"global-auth-method\"]".to_owned(),
            DiagnosticReason::SecurityRefused,
            Severity::Error
        )]
    );
}

#[test]
fn limit_status_codes_default_to_503() {
    let p = GlobalSettings::default().policy_defaults();
    assert_eq!(p.limit_req_status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p.limit_conn_status, http::StatusCode::SERVICE_UNAVAILABLE);
    let (s, said) = parse(&[
        ("limit-req-status-code", "429"),
        ("limit-conn-status-code", "503"),
    ]);
    assert!(said.is_empty(), "{said:?}");
    let p = s.policy_defaults();
    assert_eq!(p.limit_req_status, http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(p.limit_conn_status, http::StatusCode::SERVICE_UNAVAILABLE);
    let (s, said) = parse(&[("limit-rate", "64"), ("limit-rate-after", "512")]);
    assert!(said.is_empty(), "{said:?}");
    let p = s.policy_defaults();
    assert_eq!((p.limit_rate, p.limit_rate_after), (64, 512));
    // nginx's limit_req_status takes 400 to 599.
    for bad in ["200", "399", "600", "x", ""] {
        let (s, said) = parse(&[("limit-req-status-code", bad)]);
        assert_eq!(s.limit_req_status_code, 503, "{bad}");
        assert_eq!(said.len(), 1, "{bad}");
        assert_eq!(said[0].1, DiagnosticReason::InvalidSetting);
    }
}

#[test]
fn upstream_selection_keys_as_ingress_nginx_reads_them() {
    use crate::compile::annotations::IngressAnnotations;
    use crate::compile::policy::error_pages;
    use crate::compile::upstream::{LoadBalance, UpstreamAnnotations};
    use proxy_core::balance::Condition;

    let (s, said) = parse(&[]);
    assert_eq!(s.upstream.load_balance, LoadBalance::RoundRobin);
    assert!(!s.upstream.next_upstream_set && said.is_empty());

    let (s, said) = parse(&[
        ("load-balance", "ewma"),
        ("proxy-next-upstream", "error http_503"),
        ("proxy-next-upstream-tries", "5"),
        ("retry-non-idempotent", "true"),
        ("disable-proxy-intercept-errors", "true"),
    ]);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(s.upstream.load_balance, LoadBalance::Ewma);
    let defaults = s.policy_defaults();
    let n =
        super::super::upstream::next_upstream(&UpstreamAnnotations::default(), &defaults.upstream)
            .expect("the ConfigMap turns it on");
    assert!(n.on(Condition::Http503) && n.non_idempotent && n.tries == 5);

    // A value ingress-nginx would refuse keeps the default, with an error.
    let (s, said) = parse(&[
        ("load-balance", "least_conn"),
        ("proxy-next-upstream", "error,timeout"),
        ("proxy-next-upstream-timeout", "5s"),
    ]);
    assert_eq!(s.upstream, UpstreamDefaults::default());
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(said
        .iter()
        .all(|(_, r, sev)| *r == DiagnosticReason::InvalidSetting && *sev == Severity::Error));

    // disable-proxy-intercept-errors: the annotation counts only beside the Ingress's own
    // custom-http-errors; otherwise the ConfigMap's key decides.
    let (global_off, _) = parse(&[("custom-http-errors", "503")]);
    let (global_on, _) = parse(&[
        ("custom-http-errors", "503"),
        ("disable-proxy-intercept-errors", "true"),
    ]);
    let ann = |codes: Option<Vec<u16>>, disable: Option<bool>| IngressAnnotations {
        custom_http_errors: codes,
        upstream: UpstreamAnnotations {
            disable_intercept: disable,
            ..Default::default()
        },
        ..Default::default()
    };
    let pass = |a: &IngressAnnotations, g: &GlobalSettings| {
        error_pages(a, &g.policy_defaults()).map(|p| p.pass_upstream)
    };
    assert_eq!(pass(&ann(None, Some(true)), &global_off), Some(false));
    assert_eq!(
        pass(&ann(Some(vec![404]), Some(true)), &global_off),
        Some(true)
    );
    assert_eq!(pass(&ann(None, None), &global_on), Some(true));
    assert_eq!(
        pass(&ann(Some(vec![404]), Some(false)), &global_on),
        Some(false)
    );
    assert_eq!(pass(&ann(Some(vec![404]), None), &global_on), Some(true));
}

#[test]
fn upstream_keepalive_keys_reach_the_dataplane() {
    let (s, said) = parse(&[
        ("upstream-keepalive-connections", "0"),
        ("upstream-keepalive-timeout", "5"),
        ("upstream-keepalive-requests", "100"),
        ("upstream-keepalive-time", "1h 30m"),
    ]);
    assert!(said.is_empty(), "{said:?}");
    let k = s.proxy_settings().upstream_keepalive;
    assert_eq!(k.connections, 0);
    assert_eq!(k.timeout, Duration::from_secs(5));
    assert_eq!(k.requests, 100);
    assert_eq!(k.time, Duration::from_secs(5400));
    // A bad value is named and its key keeps the default; the others still apply.
    let (s, said) = parse(&[
        ("upstream-keepalive-connections", "-1"),
        ("upstream-keepalive-time", "soon"),
        ("upstream-keepalive-requests", "7"),
    ]);
    let fields: Vec<_> = said.iter().map(|(f, r, _)| (f.as_str(), *r)).collect();
    assert_eq!(
        fields,
        vec![
            (
                "data[\"upstream-keepalive-connections\"]",
                DiagnosticReason::InvalidSetting
            ),
            (
                "data[\"upstream-keepalive-time\"]",
                DiagnosticReason::InvalidSetting
            ),
        ]
    );
    assert_eq!(s.upstream_keepalive.connections, 320);
    assert_eq!(s.upstream_keepalive.time, Duration::from_secs(3600));
    assert_eq!(s.upstream_keepalive.requests, 7);
}
