//! The generator of the parity test: a pool of people, the tenant profiles, and the next step
//! (a file, an approve or a restore) drawn from a seeded xorshift generator.

use roster::config::{Config, Tenant};
use roster::model::{User, UserStatus};

/// The demo tenant's hash of config/roster.toml (a tenant needs one; nobody logs in here).
const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$gUIKVoKOUvj3MM4fCV+nuw$2MKB3ozL5xWTQ1A6bdxzFkkijVk6oSehZ5f5RJ1aT2I";

// --- the generator ---

/// xorshift64*: small, fixed, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

const FIRST_NAMES: &[&str] = &[
    "Ana",
    "Ivan",
    "Marija",
    "Luka",
    "Zoë",
    "José",
    "Ема",
    "Petra",
    "Ana Marija",
    "Ines",
];
const LAST_NAMES: &[&str] = &[
    "Horvat",
    "Kovačević",
    "Babić",
    "O'Neil",
    "Šimić",
    "Smith",
    "van der Berg",
];
const TITLES: &[&str] = &[
    "Engineer",
    "engineer",
    "Manager",
    "Clerk",
    "Head of \"Ops\"",
    "Analyst; Sales",
];
const GROUPS: &[&str] = &["Sales", "sales", "IT", "HR", "Ops", "Sales EMEA", "Продажи"];

/// A column a profile maps; its field and its header in the files.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Column {
    Code,
    Username,
    Email,
    First,
    Last,
    Title,
    Phone,
    Groups,
    StartDate,
    BirthDate,
    CostCenter,
    Active,
    Password,
}

impl Column {
    fn field(self) -> &'static str {
        match self {
            Column::Code => "mapping_code",
            Column::Username => "username",
            Column::Email => "email",
            Column::First => "first_name",
            Column::Last => "last_name",
            Column::Title => "job_title",
            Column::Phone => "phone",
            Column::Groups => "groups",
            Column::StartDate => "start_date",
            Column::BirthDate => "date_of_birth",
            Column::CostCenter => "custom.cost_center",
            Column::Active => "active",
            Column::Password => "password",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Column::Code => "Code",
            Column::Username => "User Name",
            Column::Email => "E-mail",
            Column::First => "First Name",
            Column::Last => "Last Name",
            Column::Title => "Job Title",
            Column::Phone => "Phone",
            Column::Groups => "Groups",
            Column::StartDate => "Start Date",
            Column::BirthDate => "Born",
            Column::CostCenter => "Cost Center",
            Column::Active => "Active",
            Column::Password => "Password",
        }
    }
}

/// A tenant profile: its `[tenants.import]` settings and how its files are written.
pub struct Profile {
    pub id: &'static str,
    settings: &'static str,
    delimiter: u8,
    list_separator: char,
    columns: &'static [Column],
    /// What the default seeds must come to at least once ([`step_kind`]).
    pub covers: &'static [&'static str],
}

/// What runs of profiles that remove users come to.
const REMOVING: &[&str] = &[
    "success",
    "partial",
    "duplicate",
    "error",
    "held",
    "approved",
    "restored",
];

pub const BY_EMAIL: Profile = Profile {
    id: "email",
    settings: "match_by = \"email\"\non_missing = \"deactivate\"\nmax_missing_percent = 20.0\n\
               empty_cells = \"keep\"\ndelimiter = \";\"\nlist_separator = \",\"\n",
    delimiter: b';',
    list_separator: ',',
    columns: &[
        Column::Email,
        Column::First,
        Column::Last,
        Column::Title,
        Column::Phone,
        Column::Groups,
        Column::StartDate,
        Column::CostCenter,
    ],
    covers: REMOVING,
};

pub const BY_CODE: Profile = Profile {
    id: "code",
    settings: "match_by = \"mapping_code\"\non_missing = \"delete\"\nmax_missing_percent = 25.0\n\
               empty_cells = \"clear\"\ndelimiter = \",\"\nlist_separator = \";\"\n",
    delimiter: b',',
    list_separator: ';',
    columns: &[
        Column::Code,
        Column::Last,
        Column::First,
        Column::Email,
        Column::Title,
        Column::Groups,
        Column::BirthDate,
        Column::CostCenter,
        Column::Active,
        Column::Phone,
    ],
    covers: REMOVING,
};

pub const BY_USERNAME: Profile = Profile {
    id: "username",
    settings: "match_by = \"username\"\non_missing = \"keep\"\nactivate = \"with_password\"\n\
               name_case = \"capitalize\"\ndelimiter = \"tab\"\nlist_separator = \"|\"\n",
    delimiter: b'\t',
    list_separator: '|',
    columns: &[
        Column::Username,
        Column::First,
        Column::Last,
        Column::Email,
        Column::Title,
        Column::Groups,
        Column::StartDate,
        Column::CostCenter,
        Column::Password,
        Column::Phone,
    ],
    covers: &["success", "partial", "duplicate", "error"],
};

/// The tenant of `profile`, parsed from config text as an operator would write it.
pub fn tenant_of(profile: &Profile) -> Tenant {
    let mut text = format!(
        "[[tenants]]\nid = \"{}\"\npassword_hash = \"{PASSWORD_HASH}\"\n\n[tenants.import]\n{}\n\
         [tenants.import.columns]\n",
        profile.id, profile.settings
    );
    for c in profile.columns {
        text.push_str(&format!("\"{}\" = \"{}\"\n", c.field(), c.header()));
    }
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    config.tenant(profile.id).unwrap().clone()
}

/// One person of the pool, as HR means them (files add noise that normalises away).
#[derive(Clone, Debug)]
pub struct Person {
    code: String,
    username: String,
    email: String,
    first: String,
    last: String,
    pub title: String,
    phone: String,
    groups: Vec<&'static str>,
    date: (u32, u32, u32),
    cost_center: String,
    active: bool,
    password: Option<String>,
    /// In the next file.
    pub listed: bool,
}

fn random_date(rng: &mut Rng) -> (u32, u32, u32) {
    (
        1960 + rng.below(60) as u32,
        1 + rng.below(12) as u32,
        1 + rng.below(28) as u32,
    )
}

fn hire(rng: &mut Rng, index: usize) -> Person {
    let mut groups = vec![*rng.pick(GROUPS)];
    if rng.chance(40) {
        groups.push(*rng.pick(GROUPS));
    }
    Person {
        code: format!("0{index:04}"),
        username: format!("{}{index}", ["User", "Željka", "ÖZIL", "ünal"][index % 4]),
        email: format!("person{index}@corp.example"),
        first: rng.pick(FIRST_NAMES).to_string(),
        last: rng.pick(LAST_NAMES).to_string(),
        title: rng.pick(TITLES).to_string(),
        phone: format!("+385 1 {}", 100_000 + rng.below(900_000)),
        groups,
        date: random_date(rng),
        cost_center: format!("CC-{}", rng.below(20)),
        active: rng.chance(90),
        password: rng
            .chance(30)
            .then(|| format!("Secret-{}", rng.below(1_000_000))),
        listed: rng.chance(75),
    }
}

fn change_case(rng: &mut Rng, text: &str) -> String {
    match rng.below(3) {
        0 => text.to_uppercase(),
        1 => text.to_lowercase(),
        _ => {
            let mut chars = text.chars();
            let first = chars.next().map(|c| c.to_uppercase().to_string());
            first.unwrap_or_default() + &chars.as_str().to_lowercase()
        }
    }
}

/// One random edit of person `i` that HR would send in the next file.
fn edit_person(rng: &mut Rng, people: &mut [Person], i: usize) {
    if rng.chance(3) {
        // Takes the address of someone not in the file (a rehire, a reused mailbox). Rare:
        // under match_by email both rows are skipped for good once that person is back.
        let unlisted: Vec<usize> = (0..people.len()).filter(|&j| !people[j].listed).collect();
        if !unlisted.is_empty() {
            people[i].email = people[*rng.pick(&unlisted)].email.clone();
        }
        return;
    }
    let p = &mut people[i];
    match rng.below(12) {
        0 => p.title = rng.pick(TITLES).to_string(),
        1 if rng.chance(30) => p.phone.clear(),
        1 => p.phone = format!("+385 1 {}", 100_000 + rng.below(900_000)),
        2 if p.groups.len() > 1 && rng.chance(50) => {
            p.groups.remove(rng.below(p.groups.len()));
        }
        2 => p.groups.push(*rng.pick(GROUPS)),
        3 => p.date = random_date(rng),
        4 if rng.chance(20) => p.cost_center.clear(),
        4 => p.cost_center = format!("CC-{}", rng.below(20)),
        5 => p.first = change_case(rng, &p.first),
        6 => p.last = rng.pick(LAST_NAMES).to_string(),
        7 => {
            let n = rng.below(1000);
            p.email = format!("person.{n}@corp{}.example", rng.below(3));
        }
        8 => p.username = change_case(rng, &p.username),
        9 => p.active = !p.active,
        10 => p.password = Some(format!("Secret-{}", rng.below(1_000_000))),
        _ => p.email = change_case(rng, &p.email),
    }
}

/// Who is in the next file: a few leave or the file lacks many (a hold), some come back.
fn move_people(rng: &mut Rng, people: &mut [Person]) {
    let listed: Vec<usize> = (0..people.len()).filter(|&i| people[i].listed).collect();
    let leaving = if rng.chance(12) {
        listed.len() * (30 + rng.below(31)) / 100
    } else {
        rng.below(3)
    };
    for _ in 0..leaving.min(listed.len()) {
        people[*rng.pick(&listed)].listed = false;
    }
    let unlisted: Vec<usize> = (0..people.len()).filter(|&i| !people[i].listed).collect();
    if unlisted.is_empty() {
        return;
    }
    let returning = if rng.chance(25) {
        unlisted.len() * (50 + rng.below(51)) / 100
    } else {
        rng.below(3)
    };
    for _ in 0..returning {
        people[*rng.pick(&unlisted)].listed = true;
    }
}

/// A name cell as exports write them: padded, or with a run of inner whitespace.
fn noisy(rng: &mut Rng, text: &str) -> String {
    match rng.below(12) {
        0 => format!("  {text} "),
        1 => text.replace(' ', "  "),
        2 => text.replace(' ', "\u{a0}"),
        _ => text.to_string(),
    }
}

fn date_cell(rng: &mut Rng, (y, m, d): (u32, u32, u32)) -> String {
    match rng.below(3) {
        0 => format!("{y:04}-{m:02}-{d:02}"),
        1 => format!("{d:02}.{m:02}.{y}"),
        _ => format!("{d}.{m}.{y}"),
    }
}

fn groups_cell(rng: &mut Rng, profile: &Profile, groups: &[&str]) -> String {
    let sep = profile.list_separator;
    let mut cell = groups.join(&format!("{sep}{}", [" ", ""][rng.below(2)]));
    if rng.chance(10) {
        cell.push(sep);
    }
    cell
}

fn active_cell(rng: &mut Rng, active: bool) -> String {
    let yes = ["1", "yes", "TRUE", "Active", "aktivan"];
    let no = ["0", "no", "false", "inactive", "Neaktivan"];
    rng.pick(if active { &yes } else { &no }).to_string()
}

/// The cell of `column` for `p`; optional cells are sometimes left empty.
fn cell(rng: &mut Rng, profile: &Profile, p: &Person, column: Column) -> String {
    let optional = !matches!(column, Column::First | Column::Last) && column != key_column(profile);
    if optional && rng.chance(4) {
        return String::new();
    }
    match column {
        Column::Code => noisy(rng, &p.code),
        Column::Username => p.username.clone(),
        Column::Email if rng.chance(15) => format!(" {} ", change_case(rng, &p.email)),
        Column::Email => p.email.clone(),
        Column::First => noisy(rng, &p.first),
        Column::Last => noisy(rng, &p.last),
        Column::Title => p.title.clone(),
        Column::Phone => p.phone.clone(),
        Column::Groups => groups_cell(rng, profile, &p.groups),
        Column::StartDate | Column::BirthDate => date_cell(rng, p.date),
        Column::CostCenter => p.cost_center.clone(),
        Column::Active => active_cell(rng, p.active),
        Column::Password => match &p.password {
            Some(pw) if rng.chance(40) => pw.clone(),
            _ => String::new(),
        },
    }
}

/// The column the profile matches users by (its first).
fn key_column(profile: &Profile) -> Column {
    profile.columns[0]
}

/// Breaks one or two rows as real exports do: a bad email, no last name, a key twice, a bad
/// date, an email another row has, a row one cell short, a bad `active` value.
fn add_bad_rows(rng: &mut Rng, profile: &Profile, rows: &mut Vec<Vec<String>>) {
    let at = |c: Column| profile.columns.iter().position(|&x| x == c);
    for _ in 0..1 + rng.below(2) {
        if rows.is_empty() {
            return;
        }
        let r = rng.below(rows.len());
        match rng.below(7) {
            0 => rows[r][at(Column::Email).unwrap()] = "not-an-email".into(),
            1 => rows[r][at(Column::Last).unwrap()] = String::new(),
            2 => {
                let mut twice = rows[r].clone();
                twice[at(Column::Title).unwrap()] = "Second row".into();
                rows.push(twice);
            }
            3 => {
                let date = at(Column::StartDate).or(at(Column::BirthDate)).unwrap();
                rows[r][date] = "31.02.2020".into();
            }
            4 => {
                let email = at(Column::Email).unwrap();
                rows[r][email] = rows[rng.below(rows.len())][email].clone();
            }
            5 if rng.chance(30) => {
                rows[r].pop();
            }
            6 => {
                if let Some(active) = at(Column::Active) {
                    rows[r][active] = "maybe".into();
                }
            }
            _ => {}
        }
    }
}

fn csv_cell(rng: &mut Rng, profile: &Profile, cell: &str) -> String {
    let special =
        cell.contains(char::from(profile.delimiter)) || cell.contains('"') || cell.contains('\n');
    if special || rng.chance(5) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

/// The bytes of a file with `rows`: headers in varied case, LF or CRLF, sometimes a BOM.
fn file_bytes(
    rng: &mut Rng,
    profile: &Profile,
    headers: &[String],
    rows: &[Vec<String>],
) -> Vec<u8> {
    let end = if rng.chance(30) { "\r\n" } else { "\n" };
    let sep = char::from(profile.delimiter).to_string();
    let mut text = if rng.chance(10) { "\u{feff}" } else { "" }.to_string();
    text.push_str(&headers.join(&sep));
    text.push_str(end);
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| csv_cell(rng, profile, c)).collect();
        text.push_str(&cells.join(&sep));
        text.push_str(end);
    }
    text.into_bytes()
}

/// The next file: the listed people (sometimes shuffled), sometimes with bad rows; now and
/// then a file that fails as a whole (no data rows, or no last-name column).
pub fn next_file(rng: &mut Rng, profile: &Profile, people: &[Person]) -> Vec<u8> {
    let mut headers: Vec<String> = profile
        .columns
        .iter()
        .map(|c| match rng.below(10) {
            0 => c.header().to_uppercase(),
            1 => format!(" {} ", c.header()),
            _ => c.header().to_string(),
        })
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for p in people.iter().filter(|p| p.listed) {
        rows.push(
            profile
                .columns
                .iter()
                .map(|&c| cell(rng, profile, p, c))
                .collect(),
        );
    }
    if rng.chance(30) {
        rng.shuffle(&mut rows);
    }
    if rng.chance(35) {
        add_bad_rows(rng, profile, &mut rows);
    }
    match rng.below(40) {
        0 => rows.clear(),
        1 => {
            let last = profile.columns.iter().position(|&c| c == Column::Last);
            headers[last.unwrap()] = "Surname".into();
        }
        _ => {}
    }
    file_bytes(rng, profile, &headers, &rows)
}

/// What one step does to both stores.
pub enum Action {
    Import(Vec<u8>),
    /// Approve the run each store last held (by its own import id).
    Approve,
    /// `roster restore` of one user.
    Restore(String),
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::Import(bytes) => format!("import of a {}-byte file", bytes.len()),
            Action::Approve => "approve of the last held run".into(),
            Action::Restore(key) => format!("restore of {key:?}"),
        }
    }
}

/// The generator's state across the steps of one sequence.
pub struct World {
    pub rng: Rng,
    pub people: Vec<Person>,
    last_file: Option<Vec<u8>>,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let pool = 40 + rng.below(41);
        let people = (0..pool).map(|i| hire(&mut rng, i)).collect();
        World {
            rng,
            people,
            last_file: None,
        }
    }

    /// The next step, given the sled store's view (the reference: both must agree anyway).
    pub fn next_action(
        &mut self,
        profile: &Profile,
        last_held: bool,
        reference: &[User],
    ) -> Action {
        let rng = &mut self.rng;
        if last_held && rng.chance(60) || rng.chance(3) {
            return Action::Approve;
        }
        let away: Vec<&User> = reference
            .iter()
            .filter(|u| u.status != UserStatus::Active)
            .collect();
        if !away.is_empty() && rng.chance(6) {
            return Action::Restore(rng.pick(&away).key.clone());
        }
        if let Some(same) = self.last_file.as_ref().filter(|_| rng.chance(10)) {
            return Action::Import(same.clone());
        }
        for _ in 0..rng.below(7) {
            let i = rng.below(self.people.len());
            edit_person(rng, &mut self.people, i);
        }
        move_people(rng, &mut self.people);
        let bytes = next_file(rng, profile, &self.people);
        self.last_file = Some(bytes.clone());
        Action::Import(bytes)
    }
}
