//! How long `check` and `diff` take on large policies: generates policies
//! of a few shapes (about 5 MB each, and the 10,001-rule policy of the
//! `decisions` benchmark), then times loading and checking each, and
//! diffing each against a copy with a few changes. The figures are in
//! docs/BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p ward-policy --example large_policy
//! cargo run --release -p ward-policy --example large_policy -- scaled   # one shape
//! cargo run --release -p ward-policy --example large_policy -- --write DIR  # write them out
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a measuring tool, not product code")]

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use ward_policy::{Policy, check, diff, render_check, render_diff};

/// A policy: its text, and the text of a changed copy.
struct Shape {
    name: &'static str,
    what: &'static str,
    old: String,
    new: String,
}

fn compartment(text: &mut String, name: &str, tags: &[String], offers: &[String]) {
    let quoted = |items: &[String]| items.iter().map(|item| format!("{item:?}")).collect::<Vec<_>>().join(", ");
    let _ = write!(
        text,
        "[compartment.{name}]\nrole = \"app\"\nimage = \"{name}.img\"\ntags = [{}]\noffers = [{}]\n\n",
        quoted(tags),
        quoted(offers)
    );
}

fn rule(text: &mut String, service: &str, from: &str, to: &str, action: &str) {
    let _ = write!(text, "[[rule]]\nservice = {service:?}\nfrom = {from:?}\nto = {to:?}\naction = {action:?}\n\n");
}

/// The `decisions` benchmark's shape, with `compartments` compartments and
/// `services` services: per service 16 rules naming their caller and 4 for
/// tags, and a `*` rule for ad-hoc compartments.
fn benchmark_like(compartments: usize, services: usize) -> String {
    let service = |k: usize| format!("svc{k}.call");
    let owner = |k: usize| k % compartments;
    let mut text = String::new();
    for i in 0..compartments {
        let offers: Vec<String> = (0..services).filter(|k| owner(*k) == i).map(service).collect();
        compartment(&mut text, &format!("c{i}"), &[format!("a{}", i % 20), format!("b{}", i % 7)], &offers);
    }
    text.push_str("[template.app]\nimage = \"app.img\"\ntags = [\"untrusted\"]\n\n");
    let actions = ["allow", "deny", "ask"];
    for k in 0..services {
        let to = format!("c{}", owner(k));
        for j in 0..16 {
            let from = format!("c{}", (k * 7 + j * 13) % compartments);
            rule(&mut text, &service(k), &from, &to, actions[(k + j) % 3]);
        }
        for j in 0..4 {
            let tag = if j % 2 == 0 { format!("@tag:a{}", (k + j) % 20) } else { format!("@tag:b{}", (k + j) % 7) };
            rule(&mut text, &service(k), &tag, &to, actions[(k + j + 1) % 3]);
        }
    }
    rule(&mut text, "*", "@disposable", "@any", "deny");
    text
}

/// A few changes of the kind a person makes: one rule's action, one
/// compartment's memory, one compartment more.
fn changed(text: &str) -> String {
    let mut new = text.replacen("action = \"deny\"", "action = \"allow\"", 1);
    new = new.replacen("role = \"app\"\n", "role = \"app\"\nmemory = 512\n", 1);
    new.push_str("\n[compartment.newcomer]\nrole = \"app\"\nimage = \"new.img\"\n");
    new
}

fn shapes() -> Vec<Shape> {
    let mut shapes = Vec::new();

    let text = benchmark_like(200, 500);
    shapes.push(Shape {
        name: "bench",
        what: "the decisions benchmark's policy: 200 compartments, 500 services, 10,001 rules",
        new: changed(&text),
        old: text,
    });

    let text = benchmark_like(2_000, 3_000);
    shapes.push(Shape {
        name: "scaled",
        what: "the same shape scaled up: 2,000 compartments, 3,000 services, 60,001 rules",
        new: changed(&text),
        old: text,
    });

    // Many compartments, each with a few tags and offers; a rule for each.
    let mut text = String::new();
    let count = 28_000;
    for i in 0..count {
        compartment(
            &mut text,
            &format!("m{i}"),
            &[format!("t{}", i % 100), format!("g{}", i % 13)],
            &[format!("s{i}.get")],
        );
    }
    for i in 0..count {
        rule(&mut text, &format!("s{i}.get"), &format!("m{}", (i + 1) % count), &format!("m{i}"), "allow");
    }
    rule(&mut text, "*", "@any", "@any", "deny");
    shapes.push(Shape {
        name: "compartments",
        what: "28,000 compartments, a service and a rule for each, and one `*` rule",
        new: changed(&text),
        old: text,
    });

    // One service, many rules: a rule for every pair of compartments.
    let mut text = String::new();
    let count = 270;
    for i in 0..count {
        compartment(&mut text, &format!("p{i}"), &[format!("t{}", i % 10)], &["sync".to_owned()]);
    }
    for from in 0..count {
        for to in 0..count {
            let action = if (from + to) % 3 == 0 { "deny" } else { "allow" };
            rule(&mut text, "sync", &format!("p{from}"), &format!("p{to}"), action);
        }
    }
    shapes.push(Shape {
        name: "one-service",
        what: "270 compartments and 72,900 rules of one service, one for every caller and destination",
        new: changed(&text),
        old: text,
    });

    // One line of 120,000 tags.
    let tags: Vec<String> = (0..120_000).map(|i| format!("tag-{i}")).collect();
    let mut text = String::new();
    compartment(&mut text, "tagged", &tags, &["sign".to_owned()]);
    compartment(&mut text, "caller", &[], &[]);
    rule(&mut text, "sign", "caller", "@tag:tag-119999", "allow");
    shapes.push(Shape {
        name: "tags",
        what: "one compartment with 120,000 tags on one line",
        new: changed(&text),
        old: text,
    });

    shapes
}

fn time<T>(what: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = what();
    (value, started.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice()
        && flag == "--write"
    {
        for shape in shapes() {
            for (side, text) in [("old", &shape.old), ("new", &shape.new)] {
                let path = std::path::Path::new(dir).join(shape.name).join(side);
                std::fs::create_dir_all(&path).unwrap();
                std::fs::write(path.join("policy.toml"), text).unwrap();
            }
        }
        return;
    }
    println!("| policy | size | check | diff (lines) |");
    println!("| --- | --- | --- | --- |");
    for shape in shapes() {
        if !args.is_empty() && !args.iter().any(|name| name == shape.name) {
            continue;
        }
        let (result, check_time) = time(|| check(&[("old.toml", shape.old.as_str())]));
        let report = render_check(&result);
        assert!(result.is_ok(), "{}: {report}", shape.name);
        print!(
            "| {} ({}) | {:.1} MB | {:.0} ms |",
            shape.name,
            shape.what,
            shape.old.len() as f64 / 1e6,
            check_time.as_secs_f64() * 1e3
        );
        std::io::stdout().flush().unwrap();
        let old = Policy::from_text("old.toml", &shape.old).unwrap();
        let new = Policy::from_text("new.toml", &shape.new).unwrap_or_else(|errors| panic!("{errors}"));
        let (changes, diff_time) = time(|| render_diff(&diff(&old, &new)));
        println!(" {:.0} ms ({}) |", diff_time.as_secs_f64() * 1e3, changes.lines().count());
    }
}
