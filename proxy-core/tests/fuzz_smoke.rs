//! A short run of every fuzz target (see `fuzz/`) over seeds and random inputs, so that
//! each push exercises them; long runs use `cargo fuzz` (see fuzz/README.md).

use proxy_core::fuzz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs per target: the seeds, then random mutations of them.
const RUNS: usize = 20_000;

fn run(name: &str, seeds: &[&[u8]], target: fn(&[u8])) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for seed in seeds {
        target(seed);
    }
    // Bytes that matter to these parsers, so mutations reach the interesting states.
    const ALPHABET: &[u8] =
        b"/.%2fF\\r\\n:;*-_aZ09 \t[]?#@chunked\r\nContent-Length:Transfer-Encoding:";
    for i in 0..RUNS {
        let seed = seeds[i % seeds.len()];
        let mut input = seed.to_vec();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..=input.len());
            match rng.random_range(0..4) {
                0 if !input.is_empty() => {
                    input.remove(at.min(input.len() - 1));
                }
                1 => input.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]),
                2 => input.insert(at, rng.random()),
                _ => {
                    let len = rng.random_range(0..6);
                    let from = rng.random_range(0..=input.len());
                    let piece: Vec<u8> = input[from..(from + len).min(input.len())].to_vec();
                    input.splice(at..at, piece);
                }
            }
        }
        target(&input);
    }
    eprintln!("fuzz smoke: {name}: {} inputs", seeds.len() + RUNS);
}

#[test]
fn path_normalisation() {
    run(
        "path",
        &[
            b"/",
            b"/a/../b",
            b"/%2e%2E/x",
            b"//a///b/",
            b"/a%2Fb",
            b"/a/./b/..",
        ],
        fuzz::path,
    );
}

#[test]
fn host_parsing() {
    run(
        "host",
        &[
            b"foo.example.com",
            b"*.Example.COM.",
            b"[::1]",
            b"xn--bcher-kva.example",
            b"a_b.c",
        ],
        fuzz::host,
    );
}

#[test]
fn route_table() {
    run(
        "routes",
        &[
            b"a.test /\nb.test /x\n*.w.test /y\n /z\na.test /x/y\nb.test /x",
            b"a.test /aaa/bb\na.test /aaa/bbb",
        ],
        fuzz::routes,
    );
}

#[test]
fn http1_framing() {
    run(
        "framing",
        &[
            b"\x03GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x05POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"\x01POST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\nabc",
        ],
        fuzz::framing,
    );
}
