//! Turning the text of `roster.toml` into a [`Config`], or into every problem the text has in
//! words: a syntax error names its line (and the tenant around it); a value of the wrong kind
//! (`on_missing = "purge"`, a string where a number goes) names the tenant and the key, for
//! every tenant and section at once, and the checks of `validate` run over what could be read.
//! Before, the first wrong value hid every other problem and did not say its key (review s19
//! docs F2).
//!
//! Data enters as the file's text and leaves as a `Config` (not yet validated; see
//! `Config::parse`) or as the list of sentences.

use super::{validate, Config, Tenant};

/// The config in `text`, or every problem found, each in one sentence.
pub(super) fn from_text(text: &str) -> Result<Config, Vec<String>> {
    let whole = match toml::from_str::<Config>(text) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    // Not even TOML (or not a table): the parser's one error, with its line.
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return Err(vec![describe_toml_error(text, &whole)]);
    };
    let tenants = match table.remove("tenants") {
        Some(toml::Value::Array(all)) => all,
        Some(_) | None => Vec::new(),
    };
    let mut problems = Vec::new();
    let mut readable = Vec::new();
    for (i, value) in tenants.into_iter().enumerate() {
        let name = value
            .get("id")
            .and_then(|id| id.as_str())
            .map_or_else(|| format!("#{}", i + 1), |id| format!("{id:?}"));
        match value.clone().try_into::<Tenant>() {
            Ok(t) => readable.push(t),
            Err(e) => {
                let block = tenant_block(text, i);
                for e in each_wrong_key(&value).unwrap_or_else(|| vec![e]) {
                    problems.push(format!("tenant {name}: {}", keyed(&e, text, block)));
                }
            }
        }
    }
    // Each section on its own, so every wrong one is said and the others are still checked.
    let mut sections = Vec::new();
    let mut good = toml::Table::new();
    for (key, value) in table {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        match toml::Value::Table(alone).try_into::<Config>() {
            Ok(_) => {
                good.insert(key, value);
            }
            Err(e) => sections.push(keyed(&e, text, None)),
        }
    }
    if let Ok(mut rest) = toml::Value::Table(good).try_into::<Config>() {
        rest.tenants = readable;
        rest.store
            .apply_env(std::env::var(super::store::STORE_URL_ENV).ok());
        problems.extend(validate::problems(&rest));
    }
    sections.extend(problems);
    let mut problems = sections;
    if problems.is_empty() {
        // Nothing more to say than the parser's own sentence.
        problems.push(describe_toml_error(text, &whole));
    }
    Err(problems)
}

/// Every wrong value of one tenant's table, each key read on its own (a whole table stops at its
/// first; the keys of `import` are read one by one too). None when the table has no `id` or no
/// single key fails: the whole table's error says it then.
fn each_wrong_key(tenant: &toml::Value) -> Option<Vec<toml::de::Error>> {
    let table = tenant.as_table()?;
    let id = table.get("id")?;
    let mut parts = Vec::new();
    for (key, value) in table.iter().filter(|(key, _)| *key != "id") {
        match (key.as_str(), value.as_table()) {
            ("import", Some(import)) => parts.extend(import.iter().map(|(k, v)| {
                let one = toml::Table::from_iter([(k.clone(), v.clone())]);
                (key.clone(), toml::Value::Table(one))
            })),
            _ => parts.push((key.clone(), value.clone())),
        }
    }
    let errors: Vec<toml::de::Error> = parts
        .into_iter()
        .filter_map(|(key, value)| {
            let alone = toml::Table::from_iter([("id".to_string(), id.clone()), (key, value)]);
            toml::Value::Table(alone).try_into::<Tenant>().err()
        })
        .collect();
    (!errors.is_empty()).then_some(errors)
}

/// An error of a value read without its text: toml says the key as "…\nin `import.on_missing`";
/// this puts the key first, "import.on_missing, line 7: …", a section's key as
/// "[server] idle_timeout_secs, line 2: …". `block` is the part of the file the value came from
/// (a tenant's block; None for the sections) and the line is looked up in it.
fn keyed(e: &toml::de::Error, text: &str, block: Option<Block>) -> String {
    let said = e.to_string();
    let Some((message, key)) = said.trim_end().rsplit_once("\nin `") else {
        return said.trim().to_string();
    };
    let (message, key) = (message.trim(), key.trim_end_matches('`'));
    let last = key.rsplit('.').next().unwrap_or(key);
    let section = key.split_once('.').filter(|(section, _)| {
        matches!(*section, "server" | "admin" | "mail" | "store" | "cluster")
    });
    let block = block.or_else(|| section.and_then(|(name, _)| section_block(text, name)));
    let line = block
        .and_then(|b| b.line_of(text, last))
        .map(|n| format!(", line {n}"))
        .unwrap_or_default();
    match section {
        Some((name, rest)) => format!("[{name}] {rest}{line}: {message}"),
        None => format!("{key}{line}: {message}"),
    }
}

/// A byte range of the config file: one `[[tenants]]` block or one `[section]`.
#[derive(Clone, Copy)]
struct Block {
    start: usize,
    end: usize,
}

impl Block {
    /// The 1-based line of the file that sets `key` (`key = …`) within this block.
    fn line_of(self, text: &str, key: &str) -> Option<usize> {
        let before = text.get(..self.start)?.lines().count();
        let at = text.get(self.start..self.end)?.lines().position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })?;
        Some(before + at + 1)
    }
}

/// The `i`-th `[[tenants]]` block, to the next one.
fn tenant_block(text: &str, i: usize) -> Option<Block> {
    let start = text.match_indices("[[tenants]]").nth(i)?.0;
    let end = text[start + 11..]
        .find("[[tenants]]")
        .map_or(text.len(), |n| start + 11 + n);
    Some(Block { start, end })
}

/// The `[name]` section, to the next header line.
fn section_block(text: &str, name: &str) -> Option<Block> {
    let header = format!("[{name}]");
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if start.is_none() && trimmed == header {
            start = Some(offset + line.len());
        } else if let (Some(s), true) = (start, trimmed.starts_with('[')) {
            return Some(Block {
                start: s,
                end: offset,
            });
        }
        offset += line.len();
    }
    start.map(|s| Block {
        start: s,
        end: text.len(),
    })
}

/// Turns a TOML error into one sentence with the line number and, where the parser knows it,
/// the tenant the key belongs to.
pub(super) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            let tenant = tenant_around(text, span.start);
            match tenant {
                Some(t) => format!("line {line} (tenant {t:?}): {msg}"),
                None => format!("line {line}: {msg}"),
            }
        }
        None => msg,
    }
}

/// Finds the `id = "..."` of the `[[tenants]]` block that contains byte offset `at`, if any.
fn tenant_around(text: &str, at: usize) -> Option<String> {
    let before = &text[..at.min(text.len())];
    let start = before.rfind("[[tenants]]")?;
    let block_end = text[start + 11..]
        .find("[[tenants]]")
        .map(|i| start + 11 + i)
        .unwrap_or(text.len());
    text[start..block_end].lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("id")?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}
