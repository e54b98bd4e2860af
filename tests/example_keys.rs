//! Every access key id written in the repository (demo, examples, tests, docs, benchmarks) is in
//! AWS's documented example form, so that secret scanners allow-list it instead of flagging the
//! project: gitleaks' `aws-access-token` rule matches `(A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)` and 16
//! more upper-case letters or digits, and allows those that end in `EXAMPLE` (as AWS's own
//! `AKIAIOSFODNN7EXAMPLE` and `AKIAI44QH8DHBEXAMPLE` do).

use std::path::{Path, PathBuf};

const PREFIXES: [&str; 4] = ["AKIA", "ASIA", "ABIA", "ACCA"];
const SKIPPED_DIRS: [&str; 3] = ["target", ".git", "node_modules"];

/// The key ids in `text` that such a scanner matches: a prefix, then 16 of `[A-Z0-9]`, on word
/// boundaries.
fn key_ids(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let key_char = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let mut found = Vec::new();
    for start in 0..bytes.len().saturating_sub(19) {
        if start > 0 && word(bytes[start - 1]) {
            continue;
        }
        let head = &bytes[start..start + 4];
        let prefixed = PREFIXES.iter().any(|p| p.as_bytes() == head)
            || (head.starts_with(b"A3T") && key_char(&head[3]));
        let end = start + 20;
        if prefixed
            && bytes[start + 4..end].iter().all(key_char)
            && bytes.get(end).is_none_or(|b| !word(*b))
        {
            found.push(&text[start..end]);
        }
    }
    found
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let name = entry.file_name();
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                files(&path, out);
            }
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

#[test]
fn the_scanner_pattern_is_the_scanners() {
    // Built at run time, so that this file holds no key id of its own.
    let tail = "0123456789ABCDEF";
    let (asia, a3t) = (format!("ASIA{tail}"), format!("A3TX{tail}"));
    let text = format!("id AKIAIOSFODNN7EXAMPLE, {asia} {a3t}");
    assert_eq!(
        key_ids(&text),
        ["AKIAIOSFODNN7EXAMPLE", asia.as_str(), a3t.as_str()]
    );
    // Too short, too long, lower case, or inside a longer word: not a key id.
    let lower = asia.to_lowercase();
    let text = format!("AKIAEXAMPLE AKIA{tail}G {lower} X{asia} {asia}_");
    assert_eq!(key_ids(&text), Vec::<&str>::new());
}

#[test]
fn every_access_key_id_in_the_repository_is_an_allow_listed_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    files(root, &mut paths);
    let mut scanned = 0;
    let mut keys = 0;
    let mut offending = Vec::new();
    for path in &paths {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // not text
        };
        scanned += 1;
        for id in key_ids(&text) {
            keys += 1;
            if !id.ends_with("EXAMPLE") {
                offending.push(format!("{}: {id}", path.display()));
            }
        }
    }
    assert!(
        scanned > 100,
        "only {scanned} text files found under {}",
        root.display()
    );
    assert!(
        keys >= 10,
        "only {keys} access key ids found: the scan is not reading the sources"
    );
    assert!(
        offending.is_empty(),
        "access key ids a secret scanner would flag (use AWS's example form, ending in EXAMPLE):\n{}",
        offending.join("\n")
    );
}
