//! The crate's layers (`lib.rs`, ../shared/STYLE.md "Layers"): a module imports from its own
//! layer and the layers below, never above, and no two modules import each other in a circle.
//!
//! Read from the source: every `crate::` path outside comments and `#[cfg(test)]` modules
//! (a `use crate::...` line, with its braces, or a path written inline), and every
//! `super::` path. A failure names the file, the line, the import and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top: each layer's top-level modules.
const LAYERS: &[(&str, &[&str])] = &[
    ("ground", &["wire", "traffic", "router", "scratch"]),
    ("file format", &["config"]),
    (
        "components",
        &[
            "upstream",
            "limits",
            "auth",
            "policy",
            "forwarding",
            "tls",
            "memory",
            "store",
            "cache",
            "relay",
        ],
    ),
    ("telemetry", &["telemetry"]),
    ("runtime", &["runtime"]),
    ("control", &["control"]),
    ("planes", &["gateway", "admin"]),
    ("edge", &["edge"]),
    ("process", &["server", "main", "lib", "bin"]),
];

/// The ground imports nothing of the crate, not even the rest of the ground.
const GROUND: usize = 0;
/// The data plane and the admin plane stand side by side: neither imports the other.
const PLANES: usize = 6;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// A module path of a file under `src/`: `gateway/admit.rs` is `gateway::admit`,
/// `gateway/mod.rs` is `gateway`, `lib.rs` is `lib`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" || parts.is_empty() {
            parts.push(stem);
        }
    }
    parts
}

/// The text that counts: comments blanked, and the test module (always last in a file)
/// cut off. Lines keep their numbers.
fn code_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        let code = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push(code.to_string());
    }
    out
}

/// One import: where it is written, and the module path it names (`crate::a::b::C` is
/// `["a", "b", "C"]`, `super::x` resolved against the file's module).
#[derive(Debug, Clone)]
struct Import {
    line: usize,
    text: String,
    target: Vec<String>,
}

/// Every path a `use crate::{a::B, c::{D, E}}` statement names.
fn expand(prefix: &[String], body: &str, out: &mut Vec<Vec<String>>) {
    let body = body.trim();
    if body.is_empty() {
        return;
    }
    match body.find('{') {
        None => {
            let mut path = prefix.to_vec();
            path.extend(
                body.split("::")
                    .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                    .filter(|s| !s.is_empty() && s != "self" && s != "*"),
            );
            out.push(path);
        }
        Some(open) => {
            let mut path = prefix.to_vec();
            path.extend(
                body[..open]
                    .split("::")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            let inner = &body[open + 1..body.rfind('}').unwrap_or(body.len())];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&path, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&path, &inner[start..], out);
        }
    }
}

/// The imports of one file whose module is `module`.
fn imports_of(module: &[String], text: &str) -> Vec<Import> {
    let code = code_of(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let trimmed = code[i].trim_start();
        let statement = trimmed
            .strip_prefix("pub ")
            .or_else(|| trimmed.strip_prefix("pub(crate) "))
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .unwrap_or(trimmed);
        if let Some(rest) = statement.strip_prefix("use ") {
            // a use statement, maybe over several lines
            let start = i;
            let mut whole = rest.to_string();
            while !whole.contains(';') && i + 1 < code.len() {
                i += 1;
                whole.push_str(&code[i]);
            }
            let whole = whole.split(';').next().unwrap_or("").to_string();
            let (root, body) = match whole.split_once("::") {
                Some((root, body)) => (root.trim(), body),
                None => (whole.trim(), ""),
            };
            let base: Option<Vec<String>> = match root {
                "crate" => Some(Vec::new()),
                "super" => Some(module[..module.len().saturating_sub(1)].to_vec()),
                "self" => Some(module.to_vec()),
                _ => None,
            };
            if let Some(base) = base {
                let mut paths = Vec::new();
                expand(&base, body, &mut paths);
                for target in paths {
                    out.push(Import {
                        line: start + 1,
                        text: format!("use {}", whole.trim()),
                        target: resolve_super(target),
                    });
                }
            }
        } else {
            // a path written inline: crate::a::b
            let line = &code[i];
            let mut from = 0;
            while let Some(at) = line[from..].find("crate::") {
                let at = from + at;
                let before = line[..at].chars().last();
                let starts_a_path = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
                let tail: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if starts_a_path && !tail.is_empty() {
                    out.push(Import {
                        line: i + 1,
                        text: format!("crate::{tail}"),
                        target: tail
                            .split("::")
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                    });
                }
                from = at + "crate::".len();
            }
        }
        i += 1;
    }
    out
}

/// `a::super::b` (from `use super::super::b` resolved step by step) as `b`'s full path.
fn resolve_super(path: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path {
        if part == "super" {
            out.pop();
        } else {
            out.push(part);
        }
    }
    out
}

/// Each module's imports: the module imported, with the file, line and text of the import.
type Graph = BTreeMap<Vec<String>, BTreeMap<Vec<String>, (PathBuf, usize, String)>>;

/// One broken rule.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: PathBuf,
    line: usize,
    import: String,
    rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file.display(),
            self.line,
            self.import,
            self.rule
        )
    }
}

/// The module that `target` names: the longest prefix of it that is a module of the crate.
fn module_named(modules: &BTreeSet<Vec<String>>, target: &[String]) -> Option<Vec<String>> {
    (1..=target.len())
        .rev()
        .map(|n| target[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// Check files (paths relative to `src/`, and their text) against the layers and for
/// circles. Returns every violation found.
fn check(files: &[(PathBuf, String)]) -> Vec<Violation> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut violations = Vec::new();
    // module -> the modules it imports, with where, for the circle check
    let mut graph: Graph = BTreeMap::new();
    for (path, text) in files {
        let module = module_of(path);
        let Some(top) = module.first() else { continue };
        let Some(own) = layer_of(top) else {
            violations.push(Violation {
                file: path.clone(),
                line: 1,
                import: format!("mod {top}"),
                rule: format!(
                    "`{top}` stands on no layer: add it to LAYERS here and to lib.rs's layout map"
                ),
            });
            continue;
        };
        for import in imports_of(&module, text) {
            let Some(target) = module_named(&modules, &import.target) else {
                continue;
            };
            let target_top = &target[0];
            if target_top == top {
                // inside one module: only circles matter (a child naming its own parent
                // is how Rust modules share their items, not a circle)
                if !module.starts_with(&target) {
                    graph.entry(module.clone()).or_default().insert(
                        target.clone(),
                        (path.clone(), import.line, import.text.clone()),
                    );
                }
                continue;
            }
            let Some(theirs) = layer_of(target_top) else {
                continue;
            };
            let rule = if own == GROUND {
                Some(format!(
                    "`{top}` is on the ground layer, which imports nothing of the crate"
                ))
            } else if theirs > own {
                Some(format!(
                    "`{top}` ({}) imports `{target_top}` ({}), a layer above it: move the type down or pass the value in",
                    LAYERS[own].0, LAYERS[theirs].0
                ))
            } else if own == PLANES && theirs == PLANES {
                Some(format!(
                    "`{top}` and `{target_top}` are the two planes, which never import each other"
                ))
            } else {
                None
            };
            match rule {
                Some(rule) => violations.push(Violation {
                    file: path.clone(),
                    line: import.line,
                    import: import.text.clone(),
                    rule,
                }),
                None => {
                    graph.entry(vec![top.clone()]).or_default().insert(
                        vec![target_top.clone()],
                        (path.clone(), import.line, import.text.clone()),
                    );
                }
            }
        }
    }
    violations.extend(circles(&graph));
    violations
}

/// One violation per circle in the import graph, at the edge that closes it.
fn circles(graph: &Graph) -> Vec<Violation> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Vec<String>,
        graph: &Graph,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
        out: &mut Vec<Violation>,
    ) {
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for (next, (file, line, text)) in graph.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|m| m == next).unwrap_or(0);
                    let circle: Vec<String> = stack[from..]
                        .iter()
                        .chain([next])
                        .map(|m| m.join("::"))
                        .collect();
                    out.push(Violation {
                        file: file.clone(),
                        line: *line,
                        import: text.clone(),
                        rule: format!("closes an import circle: {}", circle.join(" -> ")),
                    });
                }
                Some(Mark::Done) => {}
                None => visit(next, graph, marks, stack, out),
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut out = Vec::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            visit(node, graph, &mut marks, &mut Vec::new(), &mut out);
        }
    }
    out
}

fn source_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push((relative, text));
        }
    }
}

#[test]
fn no_module_imports_from_a_layer_above_or_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &src, &mut files);
    assert!(files.len() > 40, "read only {} files of src/", files.len());
    let violations = check(&files);
    assert!(
        violations.is_empty(),
        "{} imports break the layers (src/lib.rs, ../shared/STYLE.md):\n{}",
        violations.len(),
        violations
            .iter()
            .map(|v| format!("  src/{v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn file(path: &str, text: &str) -> (PathBuf, String) {
    (PathBuf::from(path), text.to_string())
}

#[test]
fn an_upward_import_is_named_with_its_file_line_and_rule() {
    let files = [
        file("config/mod.rs", "//! the file format\n\nuse crate::wire::names;\nuse crate::runtime::{Runtime, Route};\n"),
        file("wire/mod.rs", "pub mod answer;\n"),
        file("runtime/mod.rs", "use crate::config::FileConfig;\n"),
    ];
    let v = check(&files);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].file, PathBuf::from("config/mod.rs"));
    assert_eq!(v[0].line, 4);
    assert_eq!(v[0].import, "use crate::runtime::{Runtime, Route}");
    assert!(
        v[0].rule
            .contains("`config` (file format) imports `runtime` (runtime), a layer above it"),
        "{}",
        v[0].rule
    );
}

#[test]
fn the_ground_imports_nothing_and_the_planes_not_each_other() {
    let files = [
        file("wire/answer.rs", "use crate::traffic::Connections;\n"),
        file("traffic.rs", ""),
        file(
            "admin/mod.rs",
            "fn f() {\n    let g = crate::gateway::Gateway::new();\n}\n",
        ),
        file("gateway/mod.rs", "use crate::wire::GatewayError;\n"),
    ];
    let v = check(&files);
    let rules: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert!(
        rules[0].starts_with(
            "wire/answer.rs:1: `use crate::traffic::Connections`: `wire` is on the ground layer"
        ),
        "{}",
        rules[0]
    );
    assert!(
        rules[1].starts_with(
            "admin/mod.rs:2: `crate::gateway::Gateway::new`: `admin` and `gateway` are the two planes"
        ),
        "{}",
        rules[1]
    );
}

#[test]
fn a_circle_inside_a_module_is_found_and_a_child_may_name_its_parent() {
    let files = [
        file("auth/mod.rs", "mod jwt;\nmod credentials;\n"),
        file("auth/credentials.rs", "use super::jwt::MAX_TOKEN_LEN;\n"),
        file(
            "auth/jwt/mod.rs",
            "use super::credentials::bearer;\nmod alg;\n",
        ),
        file("auth/jwt/alg.rs", "use super::JwtVerifier;\n"),
    ];
    let v = check(&files);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].rule.contains("closes an import circle") && v[0].rule.contains("auth::credentials"),
        "{}",
        v[0]
    );
}

#[test]
fn comments_test_modules_and_unplaced_modules() {
    let files = [
        file("wire/mod.rs", "//! see [`crate::gateway`]\n#[cfg(test)]\nmod tests {\n    use crate::gateway::Gateway;\n}\n"),
        file("billing/mod.rs", "use crate::wire::names;\n"),
    ];
    let v = check(&files);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].rule.contains("`billing` stands on no layer"),
        "{}",
        v[0]
    );
}
