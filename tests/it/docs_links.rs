//! README's promise "Everything a link points to is in this repository": every relative link
//! of README.md, RELIABILITY.md, BENCHMARKS.md and docs/*.md names a file of the repository
//! (never a path outside it), and a `#fragment` into a Markdown file names one of its
//! headings (GitHub's anchors). README links to nothing outside the repository.

use std::path::{Component, Path, PathBuf};

/// The targets of `[text](target)` links in `md`, in order.
fn links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            let target = &rest[..end];
            if !target.contains(char::is_whitespace) {
                out.push(target.to_string());
            }
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(md: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in md.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// `base/rel` with `.` and `..` resolved lexically; None when it climbs above the root.
fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<Component> = base.components().collect();
    for c in Path::new(rel).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.iter().collect())
}

#[test]
fn every_relative_link_of_the_docs_resolves_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        PathBuf::from("README.md"),
        PathBuf::from("RELIABILITY.md"),
        PathBuf::from("BENCHMARKS.md"),
    ];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    docs.sort();
    files.extend(docs);
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                if file == Path::new("README.md") {
                    broken.push(format!("{}: {link}: leaves the repository", file.display()));
                }
                continue;
            }
            let (path, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let dir = file.parent().unwrap_or(Path::new(""));
            let target = if path.is_empty() {
                Some(file.clone())
            } else {
                resolve(dir, path)
            };
            let Some(target) = target else {
                broken.push(format!(
                    "{}: {link}: outside the repository",
                    file.display()
                ));
                continue;
            };
            checked += 1;
            if !root.join(&target).exists() {
                broken.push(format!("{}: {link}: no such file", file.display()));
                continue;
            }
            if !fragment.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let md = std::fs::read_to_string(root.join(&target)).unwrap();
                if !anchors(&md).iter().any(|a| a == fragment) {
                    broken.push(format!("{}: {link}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 40,
        "only {checked} links found: is the parser right?"
    );
}

#[test]
fn the_link_checker_catches_what_it_must() {
    assert_eq!(
        links("see [a](docs/a.md#x-y) and [b](../b.md), `[c](not a link)`"),
        ["docs/a.md#x-y", "../b.md"]
    );
    assert_eq!(
        anchor(" Alarm-triggered rollback: `rollbackOn` (v2)"),
        "alarm-triggered-rollback-rollbackon-v2"
    );
    assert_eq!(resolve(Path::new("docs"), "../../shared/DESIGN.md"), None);
    assert_eq!(
        resolve(Path::new("docs"), "../README.md"),
        Some(PathBuf::from("README.md"))
    );
}
