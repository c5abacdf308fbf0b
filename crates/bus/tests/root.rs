//! The root of `bus` exports what an application names, and nothing more:
//! a name added at the root must be added here on purpose, and a type only
//! a transport or plug author needs belongs in `bus::transport` or
//! `bus::plug`.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeSet;

// Fails to compile if a root item disappears or moves.
#[allow(unused_imports)]
use bus::{
    BuildError, Bus, BusBuilder, BusStats, Config, ConfigError, Envelope, Message, MessageId,
    Priority, PublishError, ShutdownReport, SubscribeError, Topic, TopicError,
};

/// The items at the root: assembling a bus, messages, the ledger, and the
/// errors an application matches.
const ROOT_ITEMS: &[&str] = &[
    "BuildError",
    "Bus",
    "BusBuilder",
    "BusStats",
    "Config",
    "ConfigError",
    "Envelope",
    "Message",
    "MessageId",
    "Priority",
    "PublishError",
    "ShutdownReport",
    "SubscribeError",
    "Topic",
    "TopicError",
];

/// The modules at the root, named for who needs them, and one per component.
const ROOT_MODULES: &[&str] = &[
    "breaker",
    "config",
    "console",
    "dlq",
    "errors",
    "health",
    "logger",
    "otel",
    "plug",
    "publish",
    "recovery",
    "runtime",
    "signal",
    "sqlite",
    "subscribe",
    "time",
    "trace",
    "transport",
];

#[test]
fn the_root_exports_exactly_the_listed_names() {
    let src = include_str!("../src/lib.rs");
    let found = root_names(src);
    let expected: BTreeSet<String> = ROOT_ITEMS
        .iter()
        .chain(ROOT_MODULES)
        .map(|s| (*s).to_owned())
        .collect();
    let extra: Vec<_> = found.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "root of bus: not in the list {extra:?}, listed but not exported {missing:?}"
    );
}

#[test]
fn the_parser_sees_uses_renames_modules_and_items_but_not_nested_ones() {
    let src = "
        //! pub use hidden::InDoc;
        mod private;
        pub mod open;
        pub use a::{B, c::D};
        pub use e as f;
        pub use g::h;
        pub mod nested {
            pub use x::Inner;
            pub struct Deep;
        }
        #[doc(hidden)]
        struct S;
        pub(crate) fn internal() {}
        pub const LIMIT: usize = 1;
        pub struct Shown { pub field: u8 }
    ";
    let names: Vec<String> = root_names(src).into_iter().collect();
    assert_eq!(
        names,
        ["B", "D", "LIMIT", "Shown", "f", "h", "nested", "open"]
    );
}

/// The names `pub use`, `pub mod` and other `pub` items declare at the top
/// level of `src` (items inside `pub mod x { ... }` blocks are that
/// module's, fields inside a struct its own).
fn root_names(src: &str) -> BTreeSet<String> {
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < code.len() {
        let Some(rest) = code.get(i..) else {
            i += 1;
            continue;
        };
        let at_item = depth == 0 && code[..i].ends_with(|c: char| c.is_whitespace() || c == ']');
        if at_item && rest.starts_with("pub use ") {
            let end = rest.find(';').unwrap();
            names.extend(use_names(&rest["pub use ".len()..end]));
            i += end + 1;
            continue;
        }
        // `pub mod m`, `pub struct S`, `pub fn f`, ...: the word after the keyword.
        if at_item && rest.starts_with("pub ") {
            let mut words =
                rest["pub ".len()..].split(|c: char| !(c.is_alphanumeric() || c == '_'));
            let keyword = words.next().unwrap_or_default();
            let name = words.find(|w| !w.is_empty()).unwrap_or_default();
            names.insert(name.to_owned());
            i += "pub ".len() + keyword.len();
            continue;
        }
        match rest.as_bytes()[0] {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    names
}

/// The names one `use` tree brings in (`a::{B, c::D}`, `e as f`, `g::h`).
fn use_names(tree: &str) -> Vec<String> {
    let leaves: Vec<&str> = match (tree.find('{'), tree.rfind('}')) {
        (Some(open), Some(close)) => tree[open + 1..close].split(',').collect(),
        _ => vec![tree],
    };
    leaves
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|leaf| {
            let leaf = leaf.rsplit(" as ").next().unwrap();
            leaf.rsplit("::").next().unwrap().trim().to_owned()
        })
        .collect()
}
