//! `--check` on the upstream-selection keys: every bad input of the issue is
//! named with file, line and key; a config using every balancing feature is ok.

use crate::common::*;
use std::time::Duration;

fn check(toml: &str) -> (Option<i32>, String, String) {
    let dir = TestDir::new();
    let path = dir.write("ringside.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let file = path.display().to_string();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).replace(&file, "FILE"),
        String::from_utf8_lossy(&out.stdout).replace(&file, "FILE"),
    )
}

const HEAD: &str = "[[listen]]\naddress = \"127.0.0.1:0\"\n\n"; // lines 1-3

/// `body` after `HEAD` is rejected with a line starting `FILE:LINE: KEY: `.
fn rejects(body: &str, line: usize, key: &str) {
    let (code, stderr, _) = check(&format!("{HEAD}{body}"));
    assert_eq!(code, Some(1), "accepted:\n{body}");
    let want = format!("FILE:{line}: {key}: ");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&want) && l.len() > want.len()),
        "no line starting {want:?} in:\n{stderr}"
    );
}

const ROUTE: &str = "[[route]]\npath = \"/\"\nupstream = \"app\"\n";

#[test]
fn an_unknown_balance_method_is_rejected() {
    rejects(
        &format!(
            "[[upstream]]\nname = \"app\"\nbalance = \"fastest\"\n\
             servers = [ {{ address = \"127.0.0.1:1\" }} ]\n{ROUTE}"
        ),
        6,
        "upstream.balance",
    );
}

#[test]
fn a_zero_weight_is_rejected() {
    rejects(
        &format!(
            "[[upstream]]\nname = \"app\"\n\
             servers = [ {{ address = \"127.0.0.1:1\", weight = 0 }} ]\n{ROUTE}"
        ),
        6,
        "upstream.servers.weight",
    );
}

#[test]
fn a_split_whose_weights_add_up_to_zero_is_rejected() {
    rejects(
        "[[upstream]]\nname = \"app\"\nservers = [ { address = \"127.0.0.1:1\" } ]\n\
             [[route]]\npath = \"/\"\n\
             split = [ { upstream = \"app\", weight = 0 }, { upstream = \"app\", weight = 0 } ]\n",
        9,
        "route.split",
    );
}

#[test]
fn an_upstream_with_only_backups_is_rejected() {
    rejects(
        &format!(
            "[[upstream]]\nname = \"app\"\n\
             servers = [ {{ address = \"127.0.0.1:1\", backup = true }} ]\n{ROUTE}"
        ),
        6,
        "upstream.servers",
    );
}

#[test]
fn a_split_naming_an_unknown_upstream_is_rejected() {
    rejects(
        "[[upstream]]\nname = \"app\"\nservers = [ { address = \"127.0.0.1:1\" } ]\n\
             [[route]]\npath = \"/\"\n\
             split = [ { upstream = \"app\", weight = 1 }, { upstream = \"ghost\", weight = 1 } ]\n",
        9,
        "route.split.upstream",
    );
}

#[test]
fn a_health_path_without_a_leading_slash_is_rejected() {
    rejects(
        &format!(
            "[[upstream]]\nname = \"app\"\nservers = [ {{ address = \"127.0.0.1:1\" }} ]\n\
             health = {{ path = \"health\" }}\n{ROUTE}"
        ),
        7,
        "upstream.health.path",
    );
}

#[test]
fn every_balancing_feature_is_accepted() {
    let mut body = String::new();
    for (i, method) in [
        "round_robin",
        "least_conn",
        "ip_hash",
        "uri_hash",
        "random_two",
    ]
    .iter()
    .enumerate()
    {
        body += &format!(
            "[[upstream]]\nname = \"u{i}\"\nbalance = \"{method}\"\n\
             servers = [ {{ address = \"127.0.0.1:1\", weight = 3 }}, {{ address = \"127.0.0.1:2\" }}, \
             {{ address = \"127.0.0.1:3\", backup = true }} ]\n\
             health = {{ path = \"/health\", interval = \"2s\", timeout = \"1s\", fails = 3, passes = 2 }}\n\
             max_fails = 2\nfail_timeout = \"5s\"\nretries = 2\nsticky = {{ cookie = \"srv\" }}\n\n"
        );
    }
    body +=
        "[[route]]\npath = \"/\"\nmatch_header = { \"X-Canary\" = \"1\" }\nupstream = \"u1\"\n\n\
             [[route]]\npath = \"/\"\nmatch_cookie = { \"beta\" = \"1\" }\nupstream = \"u2\"\n\n\
             [[route]]\npath = \"/\"\nsplit = [ { upstream = \"u0\", weight = 95 }, \
             { upstream = \"u4\", weight = 5 } ]\n";
    let (code, stderr, stdout) = check(&format!("{HEAD}{body}"));
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(stdout, "FILE: ok\n");
}
