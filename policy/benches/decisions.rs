//! How fast decisions are: a policy of 200 compartments, 500 services and
//! 10,000 rules, decided one call at a time and a million calls at a time,
//! and how long loading (parse, validate, compile) that policy takes.
//!
//! `cargo bench -p ward-policy --bench decisions`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark code")]

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ward_policy::{Policy, ServiceCall};

const COMPARTMENTS: usize = 200;
const SERVICES: usize = 500;
/// Per service: 16 rules naming their caller, then 4 for tags.
const NAMED_RULES_PER_SERVICE: usize = 16;
const TAG_RULES_PER_SERVICE: usize = 4;

fn compartment(i: usize) -> String {
    format!("c{i}")
}

fn service(k: usize) -> String {
    format!("svc{k}.call")
}

/// Service `k` is offered by compartment `k % COMPARTMENTS`.
fn owner(k: usize) -> usize {
    k % COMPARTMENTS
}

/// A valid policy of exactly 10,000 rules (plus one `*` rule): tags are
/// chosen so that no tag's members include another tag's, and each named
/// caller is distinct, so no rule shadows another.
fn policy_text() -> String {
    let mut text = String::new();
    for i in 0..COMPARTMENTS {
        let offers: Vec<String> =
            (0..SERVICES).filter(|k| owner(*k) == i).map(|k| format!("{:?}", service(k))).collect();
        let _ = write!(
            text,
            "[compartment.{}]\nrole = \"app\"\nimage = \"c.img\"\ntags = [\"a{}\", \"b{}\"]\noffers = [{}]\n\n",
            compartment(i),
            i % 20,
            i % 7,
            offers.join(", ")
        );
    }
    text.push_str("[template.app]\nimage = \"app.img\"\ntags = [\"untrusted\"]\n\n");
    let actions = ["allow", "deny", "ask"];
    for k in 0..SERVICES {
        let to = compartment(owner(k));
        for j in 0..NAMED_RULES_PER_SERVICE {
            let from = compartment((k * 7 + j * 13) % COMPARTMENTS);
            let action = actions[(k + j) % 3];
            let _ = write!(
                text,
                "[[rule]]\nservice = {:?}\nfrom = {from:?}\nto = {to:?}\naction = {action:?}\n\n",
                service(k)
            );
        }
        for j in 0..TAG_RULES_PER_SERVICE {
            let tag = if j % 2 == 0 { format!("a{}", (k + j) % 20) } else { format!("b{}", (k + j) % 7) };
            let action = actions[(k + j + 1) % 3];
            let _ = write!(
                text,
                "[[rule]]\nservice = {:?}\nfrom = \"@tag:{tag}\"\nto = {to:?}\naction = {action:?}\n\n",
                service(k)
            );
        }
    }
    text.push_str("[[rule]]\nservice = \"*\"\nfrom = \"@disposable\"\nto = \"@any\"\naction = \"deny\"\n");
    text
}

/// A spread of calls: callers named by a rule, callers matched by tag,
/// ad-hoc callers, calls no rule matches, and services no rule names.
fn queries() -> Vec<(String, String, ServiceCall)> {
    let mut queries = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % 1_000_000).unwrap()
    };
    for _ in 0..4096 {
        let k = next() % SERVICES;
        let from = match next() % 8 {
            7 => format!("tmp-{}", next()),
            _ => compartment(next() % COMPARTMENTS),
        };
        let to = compartment(if next() % 4 == 0 { next() % COMPARTMENTS } else { owner(k) });
        let call = match next() % 16 {
            0 => format!("unknown{}", next()),
            1 => format!("{}+arg{}", service(k), next() % 10),
            _ => service(k),
        };
        queries.push((from, to, ServiceCall::parse(&call).unwrap()));
    }
    queries
}

fn benches(c: &mut Criterion) {
    let text = policy_text();
    let policy = Policy::from_text("bench.toml", &text).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(policy.rules().len(), SERVICES * (NAMED_RULES_PER_SERVICE + TAG_RULES_PER_SERVICE) + 1);
    let queries = queries();
    let allowed = queries.iter().filter(|(from, to, call)| policy.decide(from, to, call).is_allowed()).count();
    assert!(allowed > 0 && allowed < queries.len(), "the queries should mix decisions");

    c.bench_function("decide one call (10,000 rules)", |b| {
        let mut index = 0;
        b.iter(|| {
            let (from, to, call) = &queries[index % queries.len()];
            index += 1;
            black_box(policy.decide(black_box(from), black_box(to), black_box(call)))
        });
    });

    let mut group = c.benchmark_group("batch");
    group.sample_size(10);
    group.bench_function("1,000,000 decisions (10,000 rules)", |b| {
        b.iter(|| {
            let mut allowed = 0usize;
            for (from, to, call) in queries.iter().cycle().take(1_000_000) {
                allowed += usize::from(policy.decide(from, to, call).is_allowed());
            }
            black_box(allowed)
        });
    });
    group.bench_function("load 10,000 rules (parse, validate, compile)", |b| {
        b.iter(|| black_box(Policy::from_text("bench.toml", black_box(&text)).is_ok()));
    });
    group.finish();
}

criterion_group!(decisions, benches);
criterion_main!(decisions);
