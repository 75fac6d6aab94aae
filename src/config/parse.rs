//! Turning the text of `roster.toml` into a [`Config`], or into every problem the text has in
//! words: a syntax error names its line (and the tenant around it); a value of the wrong kind
//! (`on_missing = "purge"`, a string where a number goes) names the tenant, the key and the
//! line that sets it, for every tenant and section at once, and the checks of `validate` run
//! over what could be read, a tenant with a wrong value included (read without that value).
//! Before, the first wrong value hid every other problem and did not say its key (review s19
//! docs F2), and a tenant with one wrong value got no further checks.
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
    let lines = KeyLines::new(text);
    let tenants = match table.remove("tenants") {
        Some(toml::Value::Array(all)) => all,
        Some(_) | None => Vec::new(),
    };
    let mut problems = Vec::new();
    let mut readable = Vec::new();
    // Tenants read without their wrong values: (id, the keys left out).
    let mut partial = Vec::new();
    for (i, value) in tenants.into_iter().enumerate() {
        let name = value
            .get("id")
            .and_then(|id| id.as_str())
            .map_or_else(|| format!("#{}", i + 1), |id| format!("{id:?}"));
        let e = match value.clone().try_into::<Tenant>() {
            Ok(t) => {
                readable.push(t);
                continue;
            }
            Err(e) => e,
        };
        let wrong = each_wrong_key(&value);
        if wrong.is_empty() {
            problems.push(format!("tenant {name}: {}", keyed(&e, &lines, Some(i))));
            continue;
        }
        for (_, e) in &wrong {
            problems.push(format!("tenant {name}: {}", keyed(e, &lines, Some(i))));
        }
        let left_out: Vec<String> = wrong.into_iter().map(|(key, _)| key).collect();
        if let Some(t) = without(&value, &left_out).filter(|t| !t.id.is_empty()) {
            partial.push((t.id.clone(), left_out));
            readable.push(t);
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
            Err(e) => sections.push(keyed(&e, &lines, None)),
        }
    }
    if let Ok(mut rest) = toml::Value::Table(good).try_into::<Config>() {
        rest.tenants = readable;
        rest.store
            .apply_env(std::env::var(super::store::STORE_URL_ENV).ok());
        let checked = validate::problems(&rest);
        problems.extend(
            checked
                .into_iter()
                .filter(|p| !follows_from_left_out(p, &partial)),
        );
    }
    sections.extend(problems);
    let mut problems = sections;
    if problems.is_empty() {
        // Nothing more to say than the parser's own sentence.
        problems.push(describe_toml_error(text, &whole));
    }
    Err(problems)
}

/// Every wrong value of one tenant's table with its key (`notify`, `import.on_missing`), each
/// key read on its own (a whole table stops at its first; the keys of `import` are read one by
/// one too). Empty when the table has no `id` or no single key fails: the whole table's error
/// says it then.
fn each_wrong_key(tenant: &toml::Value) -> Vec<(String, toml::de::Error)> {
    let Some((table, id)) = tenant.as_table().and_then(|t| Some((t, t.get("id")?))) else {
        return Vec::new();
    };
    let mut parts = Vec::new();
    for (key, value) in table.iter().filter(|(key, _)| *key != "id") {
        match (key.as_str(), value.as_table()) {
            ("import", Some(import)) => parts.extend(import.iter().map(|(k, v)| {
                let one = toml::Table::from_iter([(k.clone(), v.clone())]);
                (format!("import.{k}"), key.clone(), toml::Value::Table(one))
            })),
            _ => parts.push((key.clone(), key.clone(), value.clone())),
        }
    }
    parts
        .into_iter()
        .filter_map(|(path, key, value)| {
            let alone = toml::Table::from_iter([("id".to_string(), id.clone()), (key, value)]);
            let e = toml::Value::Table(alone).try_into::<Tenant>().err()?;
            Some((path, e))
        })
        .collect()
}

/// The tenant in `value` read without the keys `left_out` (`notify`, `import.on_missing`):
/// their defaults stand in, so the other checks can run. None if it still cannot be read.
fn without(value: &toml::Value, left_out: &[String]) -> Option<Tenant> {
    let mut table = value.as_table()?.clone();
    for key in left_out {
        match key.split_once('.') {
            Some((outer, inner)) => {
                if let Some(toml::Value::Table(t)) = table.get_mut(outer) {
                    t.remove(inner);
                }
            }
            None => {
                table.remove(key);
            }
        }
    }
    toml::Value::Table(table).try_into::<Tenant>().ok()
}

/// Checks whose verdict depends on another key: when that key was left out (its value was of
/// the wrong kind), the default in its place would make the check speak about a value the
/// file does not hold.
const DEPENDS_ON: [(&str, &str); 3] = [
    ("import.columns", "import.match_by"),
    ("password_hash/authorized_keys", "password_hash"),
    ("password_hash/authorized_keys", "authorized_keys"),
];

/// True when `problem` (`tenant "acme": import.columns must map …`) is about a tenant read
/// without some keys and about one of those keys, or a check that depends on one.
fn follows_from_left_out(problem: &str, partial: &[(String, Vec<String>)]) -> bool {
    partial.iter().any(|(id, left_out)| {
        let Some(rest) = problem.strip_prefix(&format!("tenant {id:?}: ")) else {
            return false;
        };
        let key = rest.split(' ').next().unwrap_or(rest);
        left_out.iter().any(|out| {
            key == out
                || key
                    .strip_prefix(out.as_str())
                    .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
                || DEPENDS_ON.contains(&(key, out.as_str()))
        })
    })
}

/// An error of a value read without its text: toml says the key as "…\nin `import.on_missing`";
/// this puts the key first, "import.on_missing, line 7: …", a section's key as
/// "[server] idle_timeout_secs, line 2: …". `tenant` is the index of the `[[tenants]]` entry
/// the value came from (None for the sections); the line is that of the key in that entry.
fn keyed(e: &toml::de::Error, lines: &KeyLines<'_>, tenant: Option<usize>) -> String {
    let said = e.to_string();
    let Some((message, key)) = said.trim_end().rsplit_once("\nin `") else {
        return said.trim().to_string();
    };
    let (message, key) = (message.trim(), key.trim_end_matches('`'));
    let section = key.split_once('.').filter(|(section, _)| {
        matches!(*section, "server" | "admin" | "mail" | "store" | "cluster")
    });
    let index = tenant.map(|i| i.to_string());
    let path: Vec<&str> = match &index {
        Some(i) => ["tenants", i.as_str()]
            .into_iter()
            .chain(key.split('.'))
            .collect(),
        None => key.split('.').collect(),
    };
    let line = lines
        .line_of(&path)
        .map(|n| format!(", line {n}"))
        .unwrap_or_default();
    match section.filter(|_| tenant.is_none()) {
        Some((name, rest)) => format!("[{name}] {rest}{line}: {message}"),
        None => format!("{key}{line}: {message}"),
    }
}

/// Where each key of the config file is set: a second reading of the text that keeps every
/// key's place (`toml_edit`), so a value read on its own can be traced back to its line, in
/// whichever form the file wrote it (a `[tenants.import]` table, a dotted key, an inline table).
struct KeyLines<'a> {
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> KeyLines<'a> {
    fn new(text: &'a str) -> Self {
        KeyLines {
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    /// The 1-based line of the key at `path`, e.g. `["tenants", "2", "import", "on_missing"]`
    /// (a number is a position in an array; a key under an array without one is looked for in
    /// each entry, the first that has it).
    fn line_of(&self, path: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let span = find_key(doc.as_table(), path)?;
        Some(self.text.get(..span.start)?.matches('\n').count() + 1)
    }
}

/// The byte range of the key at `path` under `table`.
fn find_key(table: &dyn toml_edit::TableLike, path: &[&str]) -> Option<std::ops::Range<usize>> {
    let (first, rest) = path.split_first()?;
    let (key, item) = table.get_key_value(first)?;
    if rest.is_empty() {
        return key.span().or_else(|| item.span());
    }
    if let Some(inner) = item.as_table_like() {
        return find_key(inner, rest);
    }
    let entries: Vec<&dyn toml_edit::TableLike> = match item {
        toml_edit::Item::ArrayOfTables(all) => {
            all.iter().map(|t| t as &dyn toml_edit::TableLike).collect()
        }
        toml_edit::Item::Value(toml_edit::Value::Array(all)) => all
            .iter()
            .filter_map(|v| v.as_inline_table())
            .map(|t| t as &dyn toml_edit::TableLike)
            .collect(),
        _ => return None,
    };
    match rest.split_first() {
        Some((n, more)) if n.parse::<usize>().is_ok() => {
            let n = n.parse::<usize>().ok()?;
            find_key(*entries.get(n)?, more)
        }
        _ => entries.iter().find_map(|t| find_key(*t, rest)),
    }
}

/// Turns a TOML error into one sentence with the line number and, where the parser knows it,
/// the tenant the key belongs to.
pub(super) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.lines().count().max(1);
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
    let start = text.get(..at).unwrap_or(text).rfind("[[tenants]]")?;
    let block = text.get(start + 11..)?;
    let block = block.find("[[tenants]]").map_or(block, |end| &block[..end]);
    block.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("id")?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::from_text;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";

    fn problems(text: &str) -> Vec<String> {
        match from_text(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(problems) => problems,
        }
    }

    fn has(problems: &[String], needle: &str) -> bool {
        problems.iter().any(|p| p.contains(needle))
    }

    /// `on_missing` is a key of `[tenants.scim_push]` and of `[tenants.import]`: the line is
    /// that of the table the wrong value is in, whichever comes first in the file, and whether
    /// the file writes a table, a dotted key or an inline table.
    #[test]
    fn the_line_is_that_of_the_key_in_its_own_table() {
        let text = format!(
            "[[tenants]]\nid = \"a\"\npassword_hash = \"{HASH}\"\n\
             [tenants.scim_push]\nurl = \"http://127.0.0.1:9/scim\"\ntoken = \"t\"\non_missing = \"delete\"\n\
             [tenants.import]\non_missing = \"purge\"\n"
        );
        let p = problems(&text);
        assert!(
            has(
                &p,
                "tenant \"a\": import.on_missing, line 9: unknown variant `purge`"
            ),
            "{p:?}"
        );
        let dotted = format!(
            "[[tenants]]\nid = \"a\"\npassword_hash = \"{HASH}\"\nscim_push.url = \"http://127.0.0.1:9/scim\"\n\
             scim_push.token = \"t\"\nscim_push.on_missing = \"delete\"\nimport.on_missing = \"purge\"\n"
        );
        let p = problems(&dotted);
        assert!(has(&p, "tenant \"a\": import.on_missing, line 7:"), "{p:?}");
        let inline = format!(
            "tenants = [\n  {{ id = \"a\", password_hash = \"{HASH}\" }},\n\n  {{ id = \"b\", password_hash = \"{HASH}\", import = {{ on_missing = \"purge\" }} }},\n]\n"
        );
        let p = problems(&inline);
        assert!(has(&p, "tenant \"b\": import.on_missing, line 4:"), "{p:?}");
        // The second tenant's key, not the first's.
        let two = format!(
            "[[tenants]]\nid = \"a\"\npassword_hash = \"{HASH}\"\n[tenants.import]\nmatch_by = \"email\"\n\
             [[tenants]]\nid = \"b\"\npassword_hash = \"{HASH}\"\n[tenants.import]\nmatch_by = \"z\"\n"
        );
        let p = problems(&two);
        assert!(has(&p, "tenant \"b\": import.match_by, line 10:"), "{p:?}");
    }

    /// A tenant with a value of the wrong kind is still checked for everything else, read with
    /// the default in that value's place; checks that depend on the wrong value stay silent
    /// rather than speak about a default the file does not hold.
    #[test]
    fn a_tenant_with_a_wrong_value_gets_every_other_check() {
        let text = format!(
            "[[tenants]]\nid = \"a\"\npassword_hash = \"{HASH}\"\nnotify = [\"not an address\"]\n\
             [tenants.import]\non_missing = \"purge\"\ntrigger = \"schedule\"\nschedule = \"every night\"\n\
             timezone = \"Mars/Olympus\"\n"
        );
        let p = problems(&text);
        for needle in [
            "tenant \"a\": import.on_missing, line 6: unknown variant `purge`",
            "tenant \"a\": import.schedule \"every night\" is not a cron expression",
            "tenant \"a\": import.timezone \"Mars/Olympus\" is not an IANA time zone",
            "tenant \"a\": notify \"not an address\" is not a mail address",
        ] {
            assert!(has(&p, needle), "missing {needle:?} in {p:?}");
        }
        let dependent = "[[tenants]]\nid = \"a\"\npassword_hash = 5\n\
             [tenants.import]\nmatch_by = 7\ntrigger = \"nightly\"\nretention_days = 0\n\
             [tenants.import.columns]\nusername = \"User\"\nfirst_name = \"First\"\nlast_name = \"Last\"\n";
        let p = problems(dependent);
        for needle in [
            "tenant \"a\": password_hash, line 3: invalid type",
            "tenant \"a\": import.match_by, line 5: invalid type",
            "tenant \"a\": import.trigger, line 6: unknown variant `nightly`",
            "tenant \"a\": import.retention_days 0 must be 1 to",
        ] {
            assert!(has(&p, needle), "missing {needle:?} in {p:?}");
        }
        for unsaid in [
            "password_hash/authorized_keys",
            "import.columns must map",
            "import.schedule",
        ] {
            assert!(!has(&p, unsaid), "{unsaid:?} follows from a default: {p:?}");
        }
    }

    /// Review s29 F2: hashes a login check can never verify, or that would hold a checking
    /// thread for minutes, are refused when the config is read, each naming its tenant.
    #[test]
    fn hashes_that_cannot_verify_or_cost_too_much_are_refused() {
        let salted = "$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";
        let bad = [
            ("pbkdf2", format!("$pbkdf2-sha256$i=1000{salted}")),
            ("cut", "$argon2id$v=19$m=19456,t=2,p=1".to_string()),
            ("bigm", format!("$argon2id$v=19$m=2000000,t=1,p=1{salted}")),
            (
                "bigt",
                format!("$argon2id$v=19$m=19456,t=100000,p=1{salted}"),
            ),
            ("work", format!("$argon2id$v=19$m=1048576,t=8,p=1{salted}")),
            ("plain", "plaintext".to_string()),
        ];
        let mut text = String::new();
        for (id, hash) in &bad {
            text.push_str(&format!(
                "[[tenants]]\nid = \"{id}\"\npassword_hash = \"{hash}\"\n"
            ));
        }
        text.push_str(&format!(
            "[[tenants]]\nid = \"good\"\npassword_hash = \"{HASH}\"\n"
        ));
        let p = match crate::config::Config::parse(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(p) => p,
        };
        for (id, _) in &bad {
            let needle = format!("tenant \"{id}\": password_hash");
            assert!(has(&p, &needle), "missing {needle:?} in {p:?}");
        }
        assert!(!has(&p, "\"good\""), "{p:?}");
        assert!(crate::model::argon::checkable(HASH).is_ok());
    }
}
