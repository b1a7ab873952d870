//! The shape of the code, checked: every room of the `cairn` library (a top-level
//! module of `src/`) may use only the rooms below it in the layer table of
//! `src/lib.rs`, and no two sibling modules of any crate in the workspace use each
//! other round a circle (`a → b → a`, or longer).
//!
//! The check reads the sources as text. It strips comments and string literals,
//! follows inline `mod name { … }` blocks, and resolves every path that starts with
//! `crate::`, `super::` or `self::` (use trees with braces included) to the module
//! it names. A path that names a module's child from inside that module (or its
//! parent from inside a child) is the tree's own shape, not a dependency between
//! rooms; only paths between two different children of one module count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from its crate root, e.g. `["data", "store"]`.
type ModPath = Vec<String>;

/// One crate's library: the modules it has and the module paths each file's code
/// names (after resolution), per module the code sits in.
struct Crate {
    /// Where the crate's `lib.rs` lives.
    src: PathBuf,
    /// Every module (files and inline blocks), by path.
    modules: BTreeSet<ModPath>,
    /// For each module, every path its code names, resolved to absolute form, with
    /// the file and line it was found on.
    uses: Vec<(ModPath, ModPath, String)>,
}

/// The workspace root (this file is `tests/architecture.rs`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every library crate of the workspace: the root package's `src/` and each
/// `crates/*/src` that has a `lib.rs`.
fn crates() -> Vec<PathBuf> {
    let mut all = vec![root().join("src")];
    if let Ok(dir) = std::fs::read_dir(root().join("crates")) {
        let mut more: Vec<PathBuf> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("src"))
            .filter(|src| src.join("lib.rs").is_file())
            .collect();
        more.sort();
        all.extend(more);
    }
    all
}

/// Source text with comments and the insides of string and char literals blanked
/// out (newlines kept, so line numbers stay right).
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) && !ident_before(b, i) {
            // A raw string r"…" or r#"…"#; `r#ident` raw identifiers have no quote.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.resize(out.len() + (j + 1 - i), b' ');
            i = j + 1;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == b'"' && (0..hashes).all(|h| b.get(i + 1 + h) == Some(&b'#')) {
                    out.resize(out.len() + 1 + hashes, b' ');
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): a literal
            // closes within a few bytes.
            let close = if b.get(i + 1) == Some(&b'\\') {
                (i + 3..b.len().min(i + 12)).find(|&j| b[j] == b'\'')
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                // Multi-byte UTF-8 char literals.
                (i + 2..b.len().min(i + 6)).find(|&j| b[j] == b'\'').filter(|_| b[i + 1] >= 0x80)
            };
            match close {
                Some(end) => {
                    out.resize(out.len() + (end + 1 - i), b' ');
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the byte before `i` continues an identifier (so `b[i]` is not the start
/// of a raw-string prefix).
fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Reads an identifier at `i` (after white space); returns it and the index past it.
fn ident_at(b: &[u8], mut i: usize) -> Option<(String, usize)> {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    (i > start).then(|| (String::from_utf8_lossy(&b[start..i]).into_owned(), i))
}

/// Expands the path (or use tree) starting at `i`, right after a `::`, into every
/// full path it names; `prefix` is what came before.
fn expand(b: &[u8], i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut j = i;
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    if b.get(j) == Some(&b'{') {
        j += 1;
        loop {
            while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b',') {
                j += 1;
            }
            if j >= b.len() || b[j] == b'}' {
                return j + 1;
            }
            j = expand(b, j, prefix.clone(), out);
        }
    }
    if b.get(j) == Some(&b'*') {
        out.push(prefix);
        return j + 1;
    }
    let Some((name, mut k)) = ident_at(b, j) else {
        out.push(prefix);
        return j.max(i + 1);
    };
    let mut path = prefix;
    path.push(name);
    if b.get(k) == Some(&b':') && b.get(k + 1) == Some(&b':') {
        k += 2;
        return expand(b, k, path, out);
    }
    out.push(path);
    // Skip `as alias` and anything up to the next separator of the tree.
    while k < b.len() && !matches!(b[k], b',' | b'}' | b';' | b'(' | b')' | b'<' | b'>' | b'\n') {
        k += 1;
    }
    k
}

/// The modules a file declares and the paths it names, by the (inline) module each
/// sits in. `here` is the file's module path.
fn scan(text: &str, here: &ModPath, modules: &mut BTreeSet<ModPath>, uses: &mut Vec<(ModPath, ModPath, usize)>) {
    let s = strip(text);
    let b = s.as_bytes();
    let mut stack: Vec<(ModPath, usize)> = Vec::new(); // inline modules and the depth they opened at
    let mut current = here.clone();
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            depth = depth.saturating_sub(1);
            if stack.last().is_some_and(|(_, d)| *d == depth) {
                stack.pop();
                current = stack.last().map(|(m, _)| m.clone()).unwrap_or_else(|| here.clone());
            }
            i += 1;
            continue;
        }
        if !is_ident(c) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b'$')) {
            i += 1;
            continue;
        }
        let Some((word, end)) = ident_at(b, i) else {
            i += 1;
            continue;
        };
        if word == "mod" {
            if let Some((name, after)) = ident_at(b, end) {
                let mut k = after;
                while k < b.len() && b[k].is_ascii_whitespace() {
                    k += 1;
                }
                let mut child = current.clone();
                child.push(name);
                modules.insert(child.clone());
                if b.get(k) == Some(&b'{') {
                    depth += 1;
                    stack.push((child.clone(), depth - 1));
                    current = child;
                    i = k + 1;
                    continue;
                }
            }
            i = end;
            continue;
        }
        if matches!(word.as_str(), "crate" | "super" | "self")
            && b.get(end) == Some(&b':')
            && b.get(end + 1) == Some(&b':')
        {
            // Resolve the leading crate/super/self chain.
            let mut base: ModPath = if word == "crate" { Vec::new() } else { current.clone() };
            if word == "super" {
                base.pop();
            }
            let mut k = end + 2;
            while let Some((next, after)) = ident_at(b, k) {
                if next == "super" && b.get(after) == Some(&b':') {
                    base.pop();
                    k = after + 2;
                } else {
                    break;
                }
            }
            let mut found = Vec::new();
            let before = line;
            let stop = expand(b, k, base, &mut found);
            line += b[i..stop.min(b.len())].iter().filter(|&&c| c == b'\n').count();
            for path in found {
                uses.push((current.clone(), path, before));
            }
            i = stop;
            continue;
        }
        i = end;
    }
}

/// The module path of a source file below `src`, or `None` for a crate root that
/// is not the library (`main.rs`, `bin/*`).
fn file_module(src: &Path, file: &Path) -> Option<ModPath> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] {
        return None;
    }
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?.to_string();
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem);
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn read_crate(src: &Path) -> Crate {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut modules = BTreeSet::new();
    let mut uses = Vec::new();
    for file in files {
        let Some(here) = file_module(src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        modules.insert(here.clone());
        let mut found = Vec::new();
        scan(&text, &here, &mut modules, &mut found);
        let shown = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
        uses.extend(found.into_iter().map(|(from, to, line)| (from, to, format!("{shown}:{line}"))));
    }
    Crate { src: src.to_path_buf(), modules, uses }
}

/// The longest prefix of `path` that is a module of the crate.
fn module_of(modules: &BTreeSet<ModPath>, path: &ModPath) -> ModPath {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)).unwrap_or_default()
}

/// Every edge between two sibling modules: (parent, from child, to child) → where.
fn sibling_edges(krate: &Crate) -> BTreeMap<(ModPath, String, String), String> {
    let mut edges = BTreeMap::new();
    for (from, to, at) in &krate.uses {
        let to = module_of(&krate.modules, to);
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common < from.len() && common < to.len() {
            let key = (from[..common].to_vec(), from[common].clone(), to[common].clone());
            edges.entry(key).or_insert_with(|| at.clone());
        }
    }
    edges
}

/// The rooms of `src/lib.rs`'s layer table, top line first.
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("read src/lib.rs");
    let doc: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("//!")).map(|l| l.trim()).collect();
    let start = doc.iter().position(|l| *l == "# Layers").expect("src/lib.rs has a `# Layers` section");
    let open = start + doc[start..].iter().position(|l| l.starts_with("```")).expect("the layer table is fenced");
    let close = open + 1 + doc[open + 1..].iter().position(|l| l.starts_with("```")).expect("the fence closes");
    doc[open + 1..close]
        .iter()
        .map(|l| l.split_whitespace().filter(|w| !w.ends_with(':')).map(String::from).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_room_uses_only_rooms_below_it() {
    let layers = layers();
    let height = layers.len();
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(n, line)| line.iter().map(move |room| (room.as_str(), height - n)))
        .collect();
    let krate = read_crate(&root().join("src"));
    let rooms: BTreeSet<&str> = krate.modules.iter().filter(|m| m.len() == 1).map(|m| m[0].as_str()).collect();
    let unlisted: Vec<_> = rooms.iter().filter(|r| !rank.contains_key(*r)).collect();
    assert!(unlisted.is_empty(), "rooms missing from src/lib.rs's layer table: {unlisted:?}");
    let gone: Vec<_> = rank.keys().filter(|r| !rooms.contains(*r)).collect();
    assert!(gone.is_empty(), "src/lib.rs's layer table names rooms that do not exist: {gone:?}");
    let mut upward = Vec::new();
    for ((parent, from, to), at) in sibling_edges(&krate) {
        if parent.is_empty() && rank[from.as_str()] <= rank[to.as_str()] {
            upward.push(format!("{at}: {from} uses {to}, which is not below it"));
        }
    }
    assert!(upward.is_empty(), "imports that run up (or across) src/lib.rs's layers:\n{}", upward.join("\n"));
}

#[test]
fn no_modules_use_each_other_round_a_circle() {
    let mut circles = Vec::new();
    for src in crates() {
        let krate = read_crate(&src);
        let edges = sibling_edges(&krate);
        let mut graph: BTreeMap<(ModPath, String), Vec<(String, String)>> = BTreeMap::new();
        for ((parent, from, to), at) in &edges {
            graph.entry((parent.clone(), from.clone())).or_default().push((to.clone(), at.clone()));
        }
        for (parent, from) in graph.keys() {
            if let Some(circle) = circle_from(&graph, parent, from) {
                // Each circle once: from its alphabetically first member.
                if circle.iter().any(|step| step.split(' ').next().is_some_and(|m| m < from.as_str())) {
                    continue;
                }
                let src = krate.src.strip_prefix(root()).unwrap_or(&krate.src).display().to_string();
                let shown = if parent.is_empty() { src } else { format!("{src}: {}", parent.join("::")) };
                circles.push(format!("in {shown}: {}", circle.join(" → ")));
            }
        }
    }
    circles.sort();
    circles.dedup();
    assert!(circles.is_empty(), "module cycles:\n{}", circles.join("\n"));
}

/// A circle through `start` among the children of `parent`, as "child (at file:line)"
/// steps, if there is one.
fn circle_from(
    graph: &BTreeMap<(ModPath, String), Vec<(String, String)>>,
    parent: &ModPath,
    start: &str,
) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut path = vec![(start.to_string(), String::new())];
    fn walk(
        graph: &BTreeMap<(ModPath, String), Vec<(String, String)>>,
        parent: &ModPath,
        start: &str,
        path: &mut Vec<(String, String)>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().map(|(m, _)| m.clone()).unwrap_or_default();
        for (next, at) in graph.get(&(parent.clone(), here)).into_iter().flatten() {
            if next == start {
                path.push((next.clone(), at.clone()));
                return true;
            }
            if seen.insert(next.clone()) {
                path.push((next.clone(), at.clone()));
                if walk(graph, parent, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(graph, parent, start, &mut path, &mut seen).then(|| {
        let mut steps = vec![start.to_string()];
        steps.extend(path.iter().skip(1).map(|(m, at)| format!("{m} ({at})")));
        steps
    })
}

#[test]
fn the_checker_sees_what_it_must() {
    // The parts that find dependencies: a use tree with braces, `super` from an
    // inline module, comments and strings that must not count.
    let text = r#"
        use crate::{alpha::One, beta::{gamma, delta::Two}};
        // use crate::commented::Out;
        const S: &str = "crate::in_string::X";
        mod inner {
            use super::super::epsilon::Three;
            fn f() { let _ = self::g; }
        }
        fn h() -> crate::zeta::Four { todo!() }
    "#;
    let mut modules = BTreeSet::new();
    let mut uses = Vec::new();
    scan(text, &vec!["room".into()], &mut modules, &mut uses);
    let named: BTreeSet<String> = uses.iter().map(|(_, p, _)| p.join("::")).collect();
    let want: BTreeSet<String> =
        ["alpha::One", "beta::gamma", "beta::delta::Two", "epsilon::Three", "room::inner::g", "zeta::Four"]
            .into_iter()
            .map(String::from)
            .collect();
    assert_eq!(named, want);
    assert!(modules.contains(&vec!["room".to_string(), "inner".to_string()]));

    // A circle among siblings is found, with where each step is.
    let krate = Crate {
        src: PathBuf::from("x"),
        modules: [vec![], vec!["a".into()], vec!["b".into()], vec!["c".into()]].into_iter().collect(),
        uses: vec![
            (vec!["a".into()], vec!["b".into(), "X".into()], "a.rs:1".into()),
            (vec!["b".into()], vec!["c".into()], "b.rs:2".into()),
            (vec!["c".into()], vec!["a".into(), "Y".into()], "c.rs:3".into()),
        ],
    };
    let edges = sibling_edges(&krate);
    let mut graph: BTreeMap<(ModPath, String), Vec<(String, String)>> = BTreeMap::new();
    for ((parent, from, to), at) in &edges {
        graph.entry((parent.clone(), from.clone())).or_default().push((to.clone(), at.clone()));
    }
    let circle = circle_from(&graph, &vec![], "a").expect("a → b → c → a is a circle");
    assert_eq!(circle, vec!["a", "b (a.rs:1)", "c (b.rs:2)", "a (c.rs:3)"]);
    assert!(circle_from(&BTreeMap::new(), &vec![], "a").is_none());
}
