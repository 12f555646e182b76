//! The layer rule of `resources` (docs/design.md §8), checked over its source: the resource
//! types are in the `skycanary-api` crate and their validation and compilation in
//! `skycanary-core`, where the compiler enforces it; the file loader is still here.

use std::path::Path;

/// Modules `resources` must not use: the controllers, the runtime and the edges.
const FORBIDDEN: [&str; 6] = ["canary", "schedule", "runner", "daemon", "server", "cli"];

/// Every `crate::<module>` path in `text` naming a forbidden module, by line number; a
/// group (`crate::{a, b::C}`, also over several lines) counts each of its modules.
fn forbidden_uses(text: &str) -> Vec<usize> {
    // Comments name paths without importing them: cut each line at `//`.
    let code: Vec<&str> = text
        .lines()
        .map(|l| l.find("//").map_or(l, |at| &l[..at]))
        .collect();
    let text = code.join("\n");
    let text = text.as_str();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let mut modules = Vec::new();
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level members of the group, up to its closing brace.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        modules.push(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        modules.push(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            modules.push(ident(rest));
        }
        if modules.iter().any(|m| FORBIDDEN.contains(&m.as_str())) {
            found.push(line_of(at));
        }
    }
    found
}

/// The layer rule of docs/design.md §8: what is left of `resources` here (the file loader;
/// the types are in `skycanary-api`, validation and compilation in `skycanary-core`) imports
/// nothing from the controllers.
#[test]
fn resources_import_no_controller() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    let mut files = 0;
    for dir in ["resources"] {
        let entries = std::fs::read_dir(src.join(dir)).expect("source directory");
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                files += 1;
                let text = std::fs::read_to_string(&path).expect("source file");
                for line in forbidden_uses(&text) {
                    offences.push(format!("{}:{line}", path.display()));
                }
            }
        }
    }
    assert!(files >= 3, "the source files were not found ({files})");
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

#[test]
fn the_scan_sees_every_form_of_path() {
    // `krate` stands for the word the layer test itself looks for in this file.
    let text = "use krate::canary::model::CanaryStatus;\n\
                let x = krate::schedule::cron::parse(s);\n\
                use krate::{analysis, cli};\n\
                use krate::canary_like::X; // krate::server::Auth in a comment\n\
                use krate::{\n    analysis::{Phase, RunState},\n    server::Auth,\n};\n\
                use krate::{traffic::{a, b}, resources};\n\
                use krate::analysis::RunState;"
        .replace("krate::", "crate::");
    assert_eq!(forbidden_uses(&text), vec![1, 2, 3, 5]);
}
