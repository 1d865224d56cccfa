//! The non-Rust examples of `sdk/README.md`, checked (its Rust examples run as the
//! SDK's doc tests): every fenced block names its language; each shell command is one
//! the README may show (`dialgate` commands parse with this command line's parser,
//! `curl` commands name a route and method of the API with valid JSON bodies, and the
//! rest are `rustup`, `cargo` and `cd`); each JSON event parses as `plugin run` and the
//! dry-run API read it; each TOML block parses.

use clap::Parser as _;
use serde_json::Value;

use super::Cli;
use crate::model::rules::RuleEvent;

const README: &str = include_str!("../../../sdk/README.md");

/// The README's fenced blocks: (language, text).
fn blocks() -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let mut open: Option<(&str, String)> = None;
    for line in README.lines() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(_), Some(block)) => found.push(block),
            (Some(language), None) => open = Some((language.trim(), String::new())),
            (None, Some((language, mut text))) => {
                text.push_str(line);
                text.push('\n');
                open = Some((language, text));
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a block of sdk/README.md is not closed");
    found
}

/// The commands of a shell block: continued lines joined, comments left out.
fn commands(block: &str) -> Vec<String> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A command's words, with single and double quotes as the shell reads them.
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unclosed quote in {command:?}");
    words.extend(word);
    words
}

/// Whether the API has a route for `method` at `path` (its segments, `{…}` matching
/// any one).
fn has_route(api: &Value, method: &str, path: &str) -> bool {
    let wanted: Vec<&str> = path.split('/').collect();
    api["paths"].as_object().is_some_and(|paths| {
        paths.iter().any(|(template, item)| {
            let segments: Vec<&str> = template.split('/').collect();
            segments.len() == wanted.len()
                && segments
                    .iter()
                    .zip(&wanted)
                    .all(|(a, b)| a == b || a.starts_with('{'))
                && item.get(method.to_ascii_lowercase()).is_some()
        })
    })
}

/// Checks one `curl` command against the API.
fn check_curl(api: &Value, words: &[String]) {
    let mut method = "GET".to_owned();
    let mut url = None;
    let mut words = words.iter().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "-X" => method = words.next().expect("a method after -X").clone(),
            "-d" => {
                let body = words.next().expect("a body after -d");
                let body: Value = serde_json::from_str(body)
                    .unwrap_or_else(|err| panic!("curl body {body}: {err}"));
                if let Some(event) = body.get("event") {
                    serde_json::from_value::<RuleEvent>(event.clone())
                        .unwrap_or_else(|err| panic!("dry-run event {event}: {err}"));
                }
            }
            "-H" | "--data-binary" => {
                words.next();
            }
            word if word.starts_with("localhost:8080/") => url = Some(word.to_owned()),
            _ => {}
        }
    }
    let url = url.expect("a curl command names a localhost:8080 URL");
    let path = url.trim_start_matches("localhost:8080");
    let path = path.split('?').next().unwrap_or(path);
    assert!(has_route(api, &method, path), "no route {method} {path}");
}

#[test]
fn every_block_of_the_sdk_readme_names_its_language() {
    let blocks = blocks();
    assert!(blocks.len() > 10, "{}", blocks.len());
    for (language, text) in &blocks {
        assert!(
            ["rust", "sh", "json", "toml"].contains(language),
            "a block in sdk/README.md has language {language:?}:\n{text}"
        );
    }
}

#[test]
fn the_shell_commands_of_the_sdk_readme_are_real() {
    let api: Value =
        serde_json::from_str(&crate::api::openapi().to_json().expect("renders")).expect("JSON");
    let mut dialgate = 0;
    for (_, block) in blocks().iter().filter(|(language, _)| *language == "sh") {
        for command in commands(block) {
            let words: Vec<String> = words(&command)
                .into_iter()
                .skip_while(|word| word.contains('=') && !word.starts_with('-'))
                .collect();
            match words.first().map(String::as_str) {
                Some("dialgate") => {
                    dialgate += 1;
                    if let Err(err) = Cli::try_parse_from(&words) {
                        panic!("{command}: {err}");
                    }
                }
                Some("curl") => check_curl(&api, &words),
                Some("cargo") => {
                    assert!(["test", "build"].contains(&words[1].as_str()), "{command}")
                }
                Some("rustup" | "cd") => {}
                _ => panic!("sdk/README.md shows an unchecked command: {command}"),
            }
        }
    }
    assert!(dialgate >= 8, "{dialgate}");
}

#[test]
fn the_json_and_toml_examples_of_the_sdk_readme_parse() {
    for (language, block) in blocks() {
        match language {
            "json" => {
                let value: Value =
                    serde_json::from_str(&block).unwrap_or_else(|err| panic!("{block}: {err}"));
                if value.get("trigger").is_some() {
                    let event: RuleEvent = serde_json::from_value(value)
                        .unwrap_or_else(|err| panic!("{block}: {err}"));
                    assert!(event.fraud.is_some(), "the example shows the fraud signals");
                } else {
                    let answers = value.as_array().expect("a list of scripted answers");
                    assert!(answers.iter().all(|answer| answer["status"].is_u64()));
                }
            }
            "toml" => {
                toml::from_str::<toml::Table>(&block)
                    .unwrap_or_else(|err| panic!("{block}: {err}"));
            }
            _ => {}
        }
    }
}
