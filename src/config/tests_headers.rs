//! Config values that become header names or values (or the health probe's
//! request line): each control character is refused with its line and key,
//! so no config can inject a header.

use super::tests::{expect_after_base, BASE};
use super::*;

#[test]
fn redirect_target_with_cr_lf_is_refused() {
    expect_after_base(
        "[[route]]\npath = \"/\"\nredirect = { to = \"https://example.com/\\r\\nSet-Cookie: a=b\" }\n",
        &["8: route.redirect.to: a header value must not contain control characters (found \\r)"],
    );
}

#[test]
fn every_header_value_refuses_each_control_character_but_tab() {
    // Every C0 control and DEL, in each key whose value is a header value.
    let keys = [
        "add_response_headers = { \"X-A\" = \"a{c}b\" }",
        "set_request_headers = { \"X-A\" = \"a{c}b\" }",
        "match_header = { \"X-A\" = \"a{c}b\" }",
        "match_cookie = { \"a\" = \"a{c}b\" }",
    ];
    let names = [
        "route.add_response_headers",
        "route.set_request_headers",
        "route.match_header",
        "route.match_cookie",
    ];
    for c in (0u8..0x20).chain([0x7f]).filter(|&c| c != b'\t') {
        let escaped = format!("\\u{:04X}", c);
        for (template, key) in keys.iter().zip(names) {
            let line = template.replace("{c}", &escaped);
            let text = format!("[[route]]\npath = \"/\"\nupstream = \"app\"\n{line}\n");
            let shown = char::from(c).escape_default().to_string();
            expect_after_base(
                &text,
                &[&format!(
                    "9: {key}: a header value must not contain control characters (found {shown})"
                )],
            );
        }
        let hsts =
            format!("[[listen]]\naddress = \"127.0.0.1:8081\"\nhsts = \"max-age=1{escaped}\"\n");
        expect_after_base(
            &hsts,
            &["8: listen.hsts: a header value must not contain control characters"],
        );
    }
}

#[test]
fn tab_and_visible_text_are_allowed_in_header_values() {
    let c = parse_str(&format!(
        "{BASE}[[route]]\npath = \"/\"\nupstream = \"app\"\n\
         add_response_headers = {{ \"X-A\" = \"a\\tb ü\" }}\n"
    ))
    .unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(
        c.routes[0].add_response_headers,
        [("X-A".into(), "a\tb ü".into())]
    );
}

#[test]
fn header_and_cookie_names_must_be_tokens() {
    for (key, name) in [
        ("add_response_headers", "X-A\\r\\nX-B"),
        ("set_request_headers", "X A"),
        ("match_header", "X:A"),
        ("match_cookie", "a=b"),
        ("add_response_headers", ""),
        ("set_request_headers", "X-\\u007F"),
    ] {
        let text = format!(
            "[[route]]\npath = \"/\"\nupstream = \"app\"\n{key} = {{ \"{name}\" = \"1\" }}\n"
        );
        expect_after_base(&text, &[&format!("9: route.{key}: ")]);
        assert!(
            problems_of(&text)[0]
                .message
                .ends_with("is not a valid name"),
            "{name:?} as a {key} name"
        );
    }
}

#[test]
fn sticky_cookie_name_must_be_a_token() {
    let up = "[[upstream]]\nname = \"b\"\nservers = [{ address = \"127.0.0.1:3001\" }]\n";
    expect_after_base(
        &format!("{up}sticky = {{ cookie = \"s\\r\\nX-Evil: 1\" }}\n"),
        &["9: upstream.sticky.cookie: \"s\\r\\nX-Evil: 1\" is not a valid cookie name"],
    );
}

#[test]
fn health_path_with_control_characters_or_spaces_is_refused() {
    for path in ["/h\\r\\nX-Evil: 1", "/h x", "/h\\u0000"] {
        let text = format!(
            "[[upstream]]\nname = \"b\"\nservers = [{{ address = \"127.0.0.1:3001\" }}]\n\
             health = {{ path = \"{path}\" }}\n"
        );
        expect_after_base(
            &text,
            &["9: upstream.health.path: must not contain spaces or control characters"],
        );
    }
}

fn problems_of(snippet: &str) -> Vec<Problem> {
    parse_str(&format!("{BASE}{snippet}")).expect_err("accepted")
}
