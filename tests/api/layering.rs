//! The imports point one way: a module of `src/` uses only the modules listed after it in
//! `src/lib.rs` (which lists them top to bottom). Read from the source text, so a new upward
//! import fails here rather than in a reviewer's head.

use std::{fs, path::Path};

/// The top-level modules, in the order `src/lib.rs` declares them.
fn declared_order(root: &Path) -> Vec<String> {
    fs::read_to_string(root.join("src/lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// The top-level modules a file names as `crate::x`, inside or outside a `use crate::{…}` group.
fn used_modules(text: &str) -> Vec<String> {
    // Unit tests may reach anywhere; stop at the first test module.
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut used = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the first name of each top-level item.
            let (mut depth, mut start) = (0, true);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && c.is_ascii_alphabetic() => {
                        start = false;
                        let name: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        used.push(name);
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.push(name);
        }
    }
    used
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_imports_only_the_ones_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = declared_order(root);
    assert!(order.len() > 10, "src/lib.rs lists {order:?}");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root.join("src")).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The binaries and the testkit sit above everything; lib.rs is the list itself.
        let Some(level) = order.iter().position(|m| *m == top) else {
            continue;
        };
        if top == "testkit" {
            continue;
        }
        for used in used_modules(&fs::read_to_string(&file).unwrap()) {
            if let Some(at) = order.iter().position(|m| *m == used)
                && at < level
            {
                upward.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports pointing up: {upward:#?}");
}

#[test]
fn the_reader_finds_grouped_and_plain_paths() {
    let text = "use crate::{api::{self, x}, auth::Verifier,\n    metrics::Metrics};\nfn f() { crate::net::describe(); }\n#[cfg(test)]\nmod tests { use crate::app; }";
    assert_eq!(used_modules(text), ["api", "auth", "metrics", "net"]);
}

/// The whole app's future for one request stays small: poem copies it into a box on every
/// request, and it had grown to 28 KB (an `async fn` keeps a future it takes twice: as the
/// argument and as what it awaits). No database or Clerk is reached: only the future's type is
/// looked at, never polled.
#[tokio::test]
async fn a_requests_future_stays_small() {
    use clerk_users::{
        app::{app_state, build_app},
        metrics::Metrics,
        net::http_client,
        testkit::{ClerkStandIn, TestApp},
    };
    use poem::Endpoint;

    let clerk = ClerkStandIn::start("sk_test_layering").await;
    let settings = TestApp::builder().settings(
        &clerk,
        "postgres://nobody:unused@127.0.0.1:1/unused",
        clerk.secret_key(),
    );
    let pool = clerk_users::db::create_pool(&settings.database);
    let app = build_app(
        app_state(&settings, pool, http_client(), Metrics::default()),
        &settings,
    );
    let future = app.call(poem::Request::default());
    let bytes = std::mem::size_of_val(&future);
    eprintln!("a request's future: {bytes} bytes");
    assert!(bytes < 8 * 1024, "{bytes} bytes");
}
